"""Scoring one input shard, streaming, checkpointed per chunk.

`score_chunk` turns a list of Documents into a table (one row per input row, nothing dropped);
`score_shard` runs it over a shard in fixed chunks of `chunk_docs` rows and writes each chunk as
`chunk-NNNNN.parquet` (atomic). A killed run redoes at most one chunk per shard: finished chunks are
read past, not rescored. Chunk boundaries are fixed by row index, so a resumed run hands the scorer
exactly the batches an uninterrupted one would have, and its floats come out bit-identical.
The shard's completion marker is its executor's (corpus/executor/base.py), not this module's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from corpus import storage
from corpus.executor.base import StepContext
from corpus.layout import chunk_name
from corpus.readers import Document, detect_format, read_documents
from corpus.storage import JobPath
from scoring.protocols import Scorer
from scoring.types import DocScore

SCORES_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("content_hash", pa.binary(32)),  # sha256 of the UTF-8 text; null for unreadable rows
        ("text_bytes", pa.int64()),
        ("n_tokens", pa.int64()),
        ("teacher_logprob", pa.float64()),
        ("reference_logprob", pa.float64()),
        ("score", pa.float64()),
        ("status", pa.string()),  # "ok", the engine's reason, or the reader's
    ]
)
# Field-level metadata marking a column whose values had no one arrow type: stored as JSON text.
JSON_ENCODING = {b"reweigh.encoding": b"json"}
_FIELDS_KEY = b"reweigh.fields"

@dataclass(frozen=True)
class ShardScores:
    """What scoring one input shard found: the result its task records."""

    input: str
    format: str
    rows: int
    chunks: int
    ok: int
    tokens: int  # tokens of ok documents
    fields: str  # the rows' fields as an arrow schema (IPC bytes, base64)

    def fields_schema(self) -> pa.Schema:
        return schema_from_b64(self.fields)

    def chunk_rows(self, chunk_docs: int, chunk: int) -> int:
        return min(chunk_docs, self.rows - chunk * chunk_docs)


def score_chunk(scorer: Scorer, docs: Sequence[Document], first_row: int) -> pa.Table:
    """One row per document; readable ones scored in a single engine call (one bucketing pool)."""
    texts = [d.text for d in docs if d.text is not None]
    scores = iter(scorer.score(texts))
    cols: dict[str, list[Any]] = {name: [] for name in SCORES_SCHEMA.names}
    for offset, doc in enumerate(docs):
        cols["row"].append(first_row + offset)
        cols["id"].append(str(doc.id))
        if doc.text is None:
            result = DocScore.not_scored(doc.status or "unreadable")
            cols["content_hash"].append(None)
            cols["text_bytes"].append(0)
        else:
            result = next(scores)
            data = doc.text.encode("utf-8", errors="surrogatepass")
            cols["content_hash"].append(hashlib.sha256(data).digest())
            cols["text_bytes"].append(len(data))
        for key, value in result.as_row().items():
            cols[key].append(value)
    fields = infer_fields_schema([d.fields for d in docs if d.text is not None])
    meta = {_FIELDS_KEY: schema_b64(fields).encode()}
    return pa.Table.from_pydict(cols, schema=SCORES_SCHEMA.with_metadata(meta))


def score_shard(
    path: str | Path,
    scorer: Scorer,
    shard_dir: JobPath,
    *,
    text_field: str,
    id_field: str,
    chunk_docs: int,
    ctx: StepContext,
) -> ShardScores:
    """Scores every row of `path` into `shard_dir`, reusing the chunk files already there."""
    storage.make_dir(shard_dir)
    docs = read_documents(path, text_field=text_field, id_field=id_field)
    rows = ok = tokens = chunks = 0
    schemas: list[pa.Schema] = []
    for index, chunk in enumerate(_chunks(docs, chunk_docs)):
        ctx.check_cancel(f"while scoring {str(path)!r} at row {rows}")
        chunk_path = shard_dir / chunk_name(index)
        if storage.is_file(chunk_path):
            table = storage.read_parquet(chunk_path)
        else:
            table = score_chunk(scorer, chunk, rows)
            storage.write_parquet(chunk_path, table)
        chunk_ok, chunk_tokens = chunk_counts(table)
        schemas.append(fields_from_metadata(table.schema))
        rows += len(chunk)
        ok += chunk_ok
        tokens += chunk_tokens
        chunks = index + 1
        ctx.progress(len(chunk), chunk_tokens)
    return ShardScores(
        input=str(path),
        format=detect_format(path),
        rows=rows,
        chunks=chunks,
        ok=ok,
        tokens=tokens,
        fields=schema_b64(unify_fields(schemas)),
    )


def chunk_counts(table: pa.Table) -> tuple[int, int]:
    """(documents scored ok, their tokens) in one chunk's score table."""
    chunk_ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok")
    return int(chunk_ok.sum()), int(np.asarray(table.column("n_tokens"))[chunk_ok].sum())


def read_chunk_scores(shard_dir: JobPath, chunk: int, columns: Sequence[str]) -> pa.Table:
    return storage.read_parquet(shard_dir / chunk_name(chunk), columns).replace_schema_metadata(None)


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while chunk := list(islice(docs, size)):
        yield chunk


# ------------------------------------------------------------------------------------ fields schema


def infer_fields_schema(rows: Sequence[dict[str, Any]]) -> pa.Schema:
    """An arrow type per field, in order of first appearance. A field whose values have no common
    arrow type (e.g. a number in one row, an object in another) is kept as JSON text."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    fields = []
    for name in names:
        try:
            fields.append(pa.field(name, pa.array([row.get(name) for row in rows]).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, ValueError):
            fields.append(pa.field(name, pa.string(), metadata=JSON_ENCODING))
    return pa.schema(fields)


def unify_fields(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for every output shard: types promoted across chunks and shards, JSON where none fits."""
    by_name: dict[str, list[pa.Field]] = {}
    for schema in schemas:
        for f in schema:
            by_name.setdefault(f.name, []).append(f)
    out = []
    for name, fields in by_name.items():
        if any(f.metadata == JSON_ENCODING for f in fields):
            out.append(pa.field(name, pa.string(), metadata=JSON_ENCODING))
            continue
        try:
            unified = pa.unify_schemas([pa.schema([f]) for f in fields], promote_options="permissive").field(
                0
            )
            out.append(pa.field(name, unified.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
            out.append(pa.field(name, pa.string(), metadata=JSON_ENCODING))
    return pa.schema(out)


def schema_b64(schema: pa.Schema) -> str:
    """An arrow schema as text for JSON markers (IPC bytes, base64)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str | bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def fields_from_metadata(schema: pa.Schema) -> pa.Schema:
    """The rows' fields schema that `score_chunk` stores in a scores chunk's metadata."""
    return schema_from_b64((schema.metadata or {})[_FIELDS_KEY])
