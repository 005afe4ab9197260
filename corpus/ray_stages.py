"""The two Ray Data stages of a rewrite on Ray: read input shards into chunks, score chunks on actors.

Imported only by corpus/ray_engine.py, after it has checked that ray is installed: this module imports
ray at the top (the Datasource base class is needed at class definition).

Every row that flows through the pipeline is one *chunk*: `chunk_docs` consecutive documents of one
input shard, cut at the same row indices as the local job cuts them (corpus/scores.py). A row carries
its (input, chunk, first_row) address, so Ray may run and return chunks in any order: the driver files
each result under its address. An actor scores a row with one `score_chunk` call, i.e. one
`engine.score` over exactly the documents the local job passes in one call, so the engine sees the
same batches and its floats come out bit-identical; Ray's own block and batch sizes never reach it.
"""

from __future__ import annotations

import functools
import logging
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from corpus.readers import Document, read_documents
from corpus.scores import score_chunk
from scoring import EngineConfig, ScoringEngine
from scoring.errors import ConfigError, InputError

log = logging.getLogger(__name__)

# Row kinds. "docs" rows leave the reader, "scores" rows leave the actors; "end" (the shard's chunk
# and row counts) and "error" (an InputError reading the shard) pass through the actors untouched.
DOCS, SCORES, END, ERROR = "docs", "scores", "end", "error"

ROW_SCHEMA = pa.schema(
    [
        ("input", pa.int64()),  # index of the input shard in RewriteConfig.inputs
        ("chunk", pa.int64()),  # chunk index within the shard (END: the number of chunks)
        ("first_row", pa.int64()),  # row index of the chunk's first document (END: rows in the shard)
        ("kind", pa.string()),
        # DOCS: pickled list[Document]; SCORES: the chunk's score table as Arrow IPC (its schema
        # metadata carries the fields schema the completion marker needs).
        ("payload", pa.large_binary()),
        ("message", pa.string()),  # ERROR: the InputError's text
        ("documents", pa.int64()),
        ("tokens", pa.int64()),  # tokens scored through the models for this chunk
        ("score_seconds", pa.float64()),  # wall time inside engine.score
        ("forward_seconds", pa.float64()),  # of which model forward passes
    ]
)


def _row(input_index: int, chunk: int, first_row: int, kind: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "input": input_index,
        "chunk": chunk,
        "first_row": first_row,
        "kind": kind,
        "payload": b"",
        "message": "",
        "documents": 0,
        "tokens": 0,
        "score_seconds": 0.0,
        "forward_seconds": 0.0,
    }
    row.update(values)
    return row


def _block(row: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist([row], schema=ROW_SCHEMA)


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class ShardToRead:
    index: int
    path: str
    done_chunks: frozenset[int]  # chunk files already on disk (a resumed job): read past, not shipped


@dataclass(frozen=True)
class ReadSettings:
    text_field: str
    id_field: str
    chunk_docs: int


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while chunk := list(islice(docs, size)):
        yield chunk


def read_shard_chunks(shard: ShardToRead, settings: ReadSettings) -> Iterator[pa.Table]:
    """One block per chunk still to score, then an END block; an ERROR block instead of raising.

    A file-level InputError is reported as a row, not raised: raising would fail the whole dataset,
    while the local job decides per shard (--on-error fail|skip). The driver leaves such a shard
    unmarked and the local step re-reads it, raising or skipping exactly as an all-local run does.
    One block per chunk (not a block of many chunks) lets Ray spread one large shard over all actors.
    """
    rows = chunks = 0
    try:
        docs = read_documents(shard.path, text_field=settings.text_field, id_field=settings.id_field)
        for chunk_index, docs_in_chunk in enumerate(_chunks(docs, settings.chunk_docs)):
            if chunk_index not in shard.done_chunks:
                payload = pickle.dumps(docs_in_chunk, protocol=pickle.HIGHEST_PROTOCOL)
                yield _block(
                    _row(shard.index, chunk_index, rows, DOCS, payload=payload, documents=len(docs_in_chunk))
                )
            rows += len(docs_in_chunk)
            chunks = chunk_index + 1
    except InputError as exc:
        yield _block(_row(shard.index, chunks, rows, ERROR, message=str(exc)))
        return
    yield _block(_row(shard.index, chunks, rows, END))


class InputChunksDatasource(Datasource):
    """One read task per input shard (a jsonl.zst cannot be split without reading it from the start)."""

    def __init__(self, shards: Sequence[ShardToRead], settings: ReadSettings) -> None:
        self.shards = list(shards)
        self.settings = settings

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_name(self) -> str:
        return "ReweighInputChunks"

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        # `parallelism` is ignored on purpose: the unit of reading is the input shard.
        return [
            ReadTask(
                functools.partial(read_shard_chunks, shard, self.settings),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=(shard.path,), exec_stats=None),
            )
            for shard in self.shards
        ]


# ------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class ModelPair:
    """What an actor loads: the same arguments the local job gives ScoringEngine.from_pretrained."""

    teacher: str
    reference: str
    engine: EngineConfig
    teacher_revision: str | None = None
    reference_revision: str | None = None

    def load(self) -> ScoringEngine:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-actor load bars would flood the driver's log
        # No score cache on actors: cached scores come from other batchings (other last bits), and
        # one SQLite file shared by many nodes is not a cache but a lock.
        return ScoringEngine.from_pretrained(
            self.teacher,
            self.reference,
            self.engine,
            teacher_revision=self.teacher_revision,
            reference_revision=self.reference_revision,
        )


def probe_fingerprint(pair: ModelPair) -> dict[str, Any]:
    """The fingerprint as the actors will compute it (device and dtype resolve where they run)."""
    engine = pair.load()
    try:
        return engine.fingerprint.as_dict()
    finally:
        engine.close()


class ScoreActor:
    """Holds one teacher/reference pair, loaded once per actor (again only if Ray restarts it)."""

    def __init__(self, pair: ModelPair, expected_digest: str) -> None:
        self.engine = pair.load()
        digest = self.engine.fingerprint.digest
        if digest != expected_digest:
            # A node whose device or dtype differs from the probe's would mix incomparable scores.
            raise ConfigError(
                f"an actor's fingerprint {digest[:12]} ({self.engine.fingerprint.as_dict()}) differs from the "
                f"job's {expected_digest[:12]}: the cluster's nodes resolve device/dtype differently; "
                "pass --device and --dtype explicitly"
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.score_row(row) for row in batch.to_pylist()], schema=ROW_SCHEMA)

    def score_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["kind"] != DOCS:
            return row
        docs: list[Document] = pickle.loads(row["payload"])
        stats = self.engine.stats
        tokens, forward = stats.tokens, stats.forward_seconds
        started = time.perf_counter()
        table = score_chunk(self.engine, docs, row["first_row"])
        return {
            **row,
            "kind": SCORES,
            "payload": table_to_ipc(table),
            "tokens": stats.tokens - tokens,
            "score_seconds": time.perf_counter() - started,
            "forward_seconds": stats.forward_seconds - forward,
        }


def table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
