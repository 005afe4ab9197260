"""Group labels (a field's value per document, e.g. its source), for stratification and per-group
report figures. The labels step (corpus/steps/groups.py) reads them in a second streaming pass over
the inputs: the score checkpoints hold no input fields. Nothing is dropped: a document without the
field is labelled MISSING, one whose row could not be read UNREADABLE.
"""

from __future__ import annotations

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
