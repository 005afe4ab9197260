"""The selection's per-chunk output: the kept rows of each scores chunk, what the rewrite adds to
them, and their text bytes (for planning shards). Written by the selection step(s), read by the
shard planner and writers; a chunk that keeps nothing has no file."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from corpus import storage
from corpus.layout import chunk_name, selection_dir
from corpus.storage import JobPath
from corpus.writers import ADDED_COLUMNS

KEPT_SCHEMA = pa.schema([("row", pa.int64()), ("text_bytes", pa.int64()), *ADDED_COLUMNS])


@dataclass(frozen=True)
class KeptChunk:
    """`rows` kept rows of chunk `chunk` of input `input` (a global list of these, in input and
    chunk order, is the order of the output)."""

    input: int
    chunk: int
    rows: int


def kept_path(out: JobPath, inputs: tuple[str, ...], kept: KeptChunk) -> JobPath:
    return selection_dir(out, kept.input, inputs[kept.input]) / chunk_name(kept.chunk)


def write_kept(out: JobPath, inputs: tuple[str, ...], kept: KeptChunk, table: pa.Table) -> None:
    storage.write_parquet(kept_path(out, inputs, kept), table.cast(KEPT_SCHEMA))


def read_kept(
    out: JobPath, inputs: tuple[str, ...], kept: KeptChunk, columns: list[str] | None = None
) -> pa.Table:
    return storage.read_parquet(kept_path(out, inputs, kept), columns)
