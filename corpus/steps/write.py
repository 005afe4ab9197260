"""Steps 3 and 4: plan the output shards from the kept rows' text bytes, then write each shard.

The planner reads one selection chunk at a time (text bytes only). Each shard's writer reads only
the selection chunks and input rows that shard holds, so shards are written in parallel, and it
returns what it wrote; the driver never opens a shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from corpus import storage
from corpus.executor.base import Result, StepContext
from corpus.layout import output_shard_path
from corpus.readers import read_documents
from corpus.scores import schema_from_b64
from corpus.selection_files import KeptChunk, read_kept
from corpus.storage import JobPath
from corpus.writers import (
    ADDED_COLUMNS,
    ShardCut,
    describe_shard,
    output_schema,
    parquet_bytes,
    plan_cuts,
    rows_to_table,
)
from scoring.errors import InputError
from scoring.protocols import ScorerSpec


@dataclass(frozen=True)
class PlanShards:
    out: JobPath
    inputs: tuple[str, ...]
    kept: tuple[KeptChunk, ...]
    shard_rows: int | None
    shard_bytes: int | None
    name: str = "plan"
    tasks: int = 1
    scorer: ScorerSpec | None = None

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        pieces = (
            np.asarray(read_kept(self.out, self.inputs, k, ["text_bytes"]).column(0), dtype=np.int64)
            for k in self.kept
        )
        cuts = plan_cuts(pieces, self.shard_rows, self.shard_bytes)
        return {"shards": [[c.start, c.stop] for c in cuts]}


@dataclass(frozen=True)
class WriteShards:
    out: JobPath
    inputs: tuple[str, ...]
    kept: tuple[KeptChunk, ...]
    cuts: tuple[ShardCut, ...]
    fields: str  # the unified fields schema of every input (schema_b64)
    text_field: str
    id_field: str
    name: str = "write"
    scorer: ScorerSpec | None = None

    @property
    def tasks(self) -> int:
        return len(self.cuts)

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        cut = self.cuts[rank]
        path = output_shard_path(cut.index)
        ctx.check_cancel(f"before writing {path}")
        rows: list[dict[str, Any]] = []
        added: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in ADDED_COLUMNS.names}
        for input_index, table in self._kept_slices(cut):
            rows.extend(self._fields_of_rows(input_index, np.asarray(table.column("row"), dtype=np.int64)))
            for name in added:
                added[name].append(table.column(name).to_numpy())
        values = {name: np.concatenate(parts) for name, parts in added.items()}
        table = rows_to_table(rows, values, output_schema(schema_from_b64(self.fields)))
        data = parquet_bytes(table)
        storage.write_bytes(self.out / path, data)
        return describe_shard(path, data, values)

    def _kept_slices(self, cut: ShardCut) -> Iterator[tuple[int, pa.Table]]:
        """The kept rows [cut.start, cut.stop) of the output order, by input (consecutive chunks of
        one input joined, in row order)."""
        first = 0
        current: int | None = None
        parts: list[pa.Table] = []
        for k in self.kept:
            last = first + k.rows
            lo, hi = max(cut.start, first), min(cut.stop, last)
            if lo < hi:
                table = read_kept(self.out, self.inputs, k).slice(lo - first, hi - lo)
                if current is not None and k.input != current:
                    yield current, pa.concat_tables(parts)
                    parts = []
                current = k.input
                parts.append(table)
            if last >= cut.stop:
                break
            first = last
        if current is not None:
            yield current, pa.concat_tables(parts)

    def _fields_of_rows(self, input_index: int, wanted: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """The fields of rows `wanted` (ascending) of an input, read up to the last of them."""
        path = self.inputs[input_index]
        docs = read_documents(path, text_field=self.text_field, id_field=self.id_field)
        out: list[dict[str, Any]] = []
        position = 0
        for doc_index, doc in enumerate(docs):
            if position == len(wanted):
                break
            if doc_index == wanted[position]:
                out.append(doc.fields)
                position += 1
        if position != len(wanted):
            raise InputError(
                f"input {path!r} ended before row {int(wanted[position])}: it changed since it was scored"
            )
        return out
