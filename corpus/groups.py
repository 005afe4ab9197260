"""Group labels (a field's value per document, e.g. its source) for per-group report figures.

A second streaming pass over the inputs: the score checkpoints hold no input fields. Nothing is
dropped: a document without the field is labelled MISSING, one whose row could not be read UNREADABLE.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from corpus.readers import read_documents

MISSING = "(missing)"
UNREADABLE = "(unreadable)"


def field_value(fields: dict[str, object], field: str) -> object:
    """`field` of a row: a top-level key, else a dotted path into nested objects (`meta.pile_set_name`,
    as the Pile stores its source). None when absent."""
    if field in fields:
        return fields[field]
    value: object = fields
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def label_of(value: object) -> str:
    if value is None:
        return MISSING
    return value if isinstance(value, str) else repr(value)


def read_groups(
    inputs: Sequence[str],
    input_index: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    field: str,
    text_field: str,
    id_field: str,
) -> npt.NDArray[np.str_]:
    """The label of `field` for each (input, row) pair of the selection arrays, in their order."""
    labels = np.full(len(rows), MISSING, dtype=object)
    for index in np.unique(input_index).tolist():
        where = np.flatnonzero(input_index == index)
        position_of_row = {int(r): int(i) for r, i in zip(rows[where], where, strict=True)}
        for row, doc in enumerate(read_documents(inputs[index], text_field=text_field, id_field=id_field)):
            at = position_of_row.get(row)
            if at is not None:
                labels[at] = UNREADABLE if not doc.readable else label_of(field_value(doc.fields, field))
    return labels.astype(str)
