"""Step 3 of a rewrite: kept documents -> output parquet shards of a target size.

The cut into shards is planned from numbers alone (each kept document's text bytes, in global input
order), so it is the same on every run; a shard is then written in one piece, atomically, and a
resumed run skips the shards already on disk and reads only the inputs that feed the others.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from corpus.fsutil import write_parquet_atomic
from corpus.readers import read_documents
from corpus.scores import JSON_ENCODING
from scoring.errors import InputError, JobCancelledError

SHARDS_DIR = "shards"
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
class KeptRows:
    """The kept rows of one input shard and what the rewrite adds to each (arrays aligned by row)."""

    input_index: int
    path: str
    row: npt.NDArray[np.int64]
    values: dict[str, npt.NDArray[Any]]  # one array per ADDED_COLUMNS name

    def __len__(self) -> int:
        return len(self.row)


@dataclass(frozen=True)
class OutputShard:
    index: int
    start: int  # [start, stop) in the global order of kept documents
    stop: int

    @property
    def path(self) -> str:
        return f"{SHARDS_DIR}/part-{self.index:05d}.parquet"


def plan_output_shards(
    text_bytes_per_kept: npt.NDArray[np.int64], shard_rows: int | None, shard_bytes: int | None
) -> list[OutputShard]:
    """Greedy cut: a shard ends before the row that would exceed `shard_rows` or `shard_bytes` (of
    text), and holds at least one row."""
    n = len(text_bytes_per_kept)
    cum = np.cumsum(text_bytes_per_kept, dtype=np.int64)
    shards: list[OutputShard] = []
    start = 0
    while start < n:
        stop = n if shard_rows is None else min(n, start + shard_rows)
        if shard_bytes is not None:
            before = int(cum[start - 1]) if start else 0
            fits = int(np.searchsorted(cum, before + shard_bytes, side="right"))
            stop = min(stop, max(fits, start + 1))
        shards.append(OutputShard(len(shards), start, stop))
        start = stop
    return shards


def output_schema(fields: pa.Schema) -> pa.Schema:
    kept = [f for f in fields if f.name not in ADDED_COLUMNS.names]
    return pa.schema([*kept, *ADDED_COLUMNS])


def rows_to_table(
    rows: Sequence[dict[str, Any]], added: dict[str, npt.NDArray[Any]], schema: pa.Schema
) -> pa.Table:
    arrays = []
    for f in schema:
        if f.name in added:
            # from_pandas: NaN -> null, e.g. the log-probs of a proxy-scored document (the pair did not run).
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


def write_output_shards(
    out_dir: Path,
    kept: Sequence[KeptRows],
    plan: Sequence[OutputShard],
    fields: pa.Schema,
    *,
    text_field: str = "text",
    id_field: str = "id",
    cancel: threading.Event | None = None,
    on_shard: Callable[[OutputShard, int], None] | None = None,
) -> None:
    """Writes every planned shard that is not on disk yet. `on_shard(shard, documents)` after each."""
    schema = output_schema(fields)
    missing = [s for s in plan if not (out_dir / s.path).is_file()]
    for s in plan:
        if s not in missing and on_shard is not None:
            on_shard(s, s.stop - s.start)
    if not missing:
        return
    todo = iter(missing)
    current = next(todo, None)
    rows: list[dict[str, Any]] = []
    first = 0  # global kept ordinal of this input's first kept row
    for part in kept:
        if current is None:
            break
        last = first + len(part)
        if last <= current.start:  # nothing of this input goes into a shard still to write
            first = last
            continue
        if cancel is not None and cancel.is_set():
            raise JobCancelledError(f"cancelled while writing {current.path}")
        docs = read_documents(part.path, text_field=text_field, id_field=id_field)
        position = 0  # index into part.row
        for doc_index, doc in enumerate(docs):
            if position == len(part) or current is None:
                break
            if doc_index != part.row[position]:
                continue
            ordinal = first + position
            position += 1
            if ordinal < current.start:
                continue
            rows.append(doc.fields)
            if ordinal == current.stop - 1:
                _flush(out_dir, current, rows, kept, schema)
                if on_shard is not None:
                    on_shard(current, len(rows))
                rows = []
                current = next(todo, None)
                if current is not None and cancel is not None and cancel.is_set():
                    raise JobCancelledError(f"cancelled before writing {current.path}")
        if position != len(part) and current is not None:
            raise InputError(
                f"input {part.path!r} ended before row {int(part.row[position])}: it changed since it was scored"
            )
        first = last


def _flush(
    out_dir: Path, shard: OutputShard, rows: list[dict[str, Any]], kept: Sequence[KeptRows], schema: pa.Schema
) -> None:
    values = _added_values(kept, shard.start, shard.stop)
    table = rows_to_table(rows, values, schema)
    write_parquet_atomic(out_dir / shard.path, table, row_group_size=ROW_GROUP_ROWS)


def _added_values(kept: Sequence[KeptRows], start: int, stop: int) -> dict[str, npt.NDArray[Any]]:
    """The added columns of kept documents [start, stop) in global order, gathered across inputs."""
    pieces: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in ADDED_COLUMNS.names}
    first = 0
    for part in kept:
        last = first + len(part)
        lo, hi = max(start, first), min(stop, last)
        if lo < hi:
            for name in pieces:
                pieces[name].append(part.values[name][lo - first : hi - first])
        first = last
    return {name: np.concatenate(p) if p else np.zeros(0) for name, p in pieces.items()}
