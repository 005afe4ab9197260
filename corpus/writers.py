"""Output shards: planned from the kept rows' text bytes, then each written on its own.

The cut into shards is planned from numbers alone (each kept document's text bytes, in global input
order), so it is the same on every run. A shard is written in one piece, atomically, by a task that
reads only the selection chunks and input rows it holds, and that returns what it wrote (rows,
documents, tokens, bytes, sha256): the manifest is assembled from those returns, not from the disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from corpus.fsutil import PARQUET_OPTIONS
from corpus.scores import JSON_ENCODING
from scoring.errors import InputError

# What the rewrite adds to every kept row (an input field of the same name is replaced).
ADDED_COLUMNS = pa.schema(
    [
        ("score", pa.float64()),
        ("teacher_logprob", pa.float64()),
        ("reference_logprob", pa.float64()),
        ("n_tokens", pa.int64()),
        ("repeats", pa.int64()),
        ("weight", pa.float64()),
    ]
)
ROW_GROUP_ROWS = 8192


@dataclass(frozen=True)
class ShardCut:
    """Output shard `index` holds kept documents [start, stop) in the global output order."""

    index: int
    start: int
    stop: int


def plan_cuts(
    text_bytes_per_kept: Iterable[npt.NDArray[np.int64]], shard_rows: int | None, shard_bytes: int | None
) -> list[ShardCut]:
    """Greedy cut over kept documents given in pieces (e.g. one per chunk, so that no more than a
    piece is in memory): a shard ends before the row that would exceed `shard_rows` or `shard_bytes`
    (of text), and holds at least one row."""
    cuts: list[ShardCut] = []
    start = rows = size = 0  # the open shard: first document, rows and bytes so far
    position = 0  # documents seen before this piece
    for piece in text_bytes_per_kept:
        cum = np.cumsum(piece, dtype=np.int64)
        taken = 0  # of this piece, in closed shards or the open one
        while taken < len(piece):
            base = int(cum[taken - 1]) if taken else 0
            fit = len(piece) - taken
            if shard_rows is not None:
                fit = min(fit, shard_rows - rows)
            if shard_bytes is not None:
                fit = min(fit, int(np.searchsorted(cum, base + shard_bytes - size, side="right")) - taken)
            fit = max(fit, 1 if rows == 0 else 0)  # an oversized document still gets a shard
            taken_bytes = int(cum[taken + fit - 1]) - base if fit else 0
            taken += fit
            rows += fit
            size += taken_bytes
            if taken < len(piece):  # the next document does not fit: close the shard before it
                cuts.append(ShardCut(len(cuts), start, position + taken))
                start, rows, size = position + taken, 0, 0
        position += len(piece)
    if rows:
        cuts.append(ShardCut(len(cuts), start, position))
    return cuts


def output_schema(fields: pa.Schema) -> pa.Schema:
    kept = [f for f in fields if f.name not in ADDED_COLUMNS.names]
    return pa.schema([*kept, *ADDED_COLUMNS])


def rows_to_table(
    rows: Sequence[dict[str, Any]], added: dict[str, npt.NDArray[Any]], schema: pa.Schema
) -> pa.Table:
    arrays = []
    for f in schema:
        if f.name in added:
            # NaN -> null: a proxy-scored document has no log-probs, and no number stands in for them.
            arrays.append(pa.array(added[f.name], type=f.type, from_pandas=True))
            continue
        values = [row.get(f.name) for row in rows]
        if f.metadata == JSON_ENCODING:
            values = [
                None if v is None else json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values
            ]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise InputError(f"field {f.name!r} does not fit its column type {f.type}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    """The shard file's bytes, with the job's fixed writer options (same table, same bytes)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
    return bytes(sink.getvalue().to_pybytes())


def describe_shard(path: str, data: bytes, added: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """What a writer returns for the manifest (a ShardEntry's fields)."""
    repeats = added["repeats"]
    return {
        "path": path,
        "rows": len(repeats),
        "documents": int(repeats.sum()),
        "tokens": int((added["n_tokens"] * repeats).sum()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
