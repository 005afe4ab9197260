"""Step 1 of a rewrite: score one input shard, streaming, checkpointed per chunk.

`score_chunk` turns a list of Documents into a table (one row per input row, nothing dropped);
`score_input_shard` runs it over a shard in fixed chunks of `chunk_docs` rows and writes each chunk
as `chunk-NNNNN.parquet` (atomic), then `_DONE.json` as the shard's completion marker. A killed run
redoes at most one chunk per shard: finished chunks are read past, not rescored. Chunk boundaries
are fixed by row index, so a resumed run hands the engine exactly the batches an uninterrupted one
would have, and its floats come out bit-identical.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus.fsutil import write_json_atomic, write_parquet_atomic
from corpus.readers import Document, read_documents
from scoring.errors import JobCancelledError
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
DONE_MARKER = "_DONE.json"
SKIPPED_MARKER = "_SKIPPED.json"
# Field-level metadata marking a column whose values had no one arrow type: stored as JSON text.
JSON_ENCODING = {b"reweigh.encoding": b"json"}
_FIELDS_KEY = b"reweigh.fields"

ProgressFn = Callable[[int, int], None]  # (documents, tokens) done since the last call


class Engine(Protocol):
    """What a rewrite needs of a scoring engine (scoring.ScoringEngine, or a fake in tests)."""

    def score(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]: ...


@dataclass(frozen=True)
class ShardScoreSummary:
    """The completion marker of one scored input shard."""

    input: str
    rows: int
    chunks: int
    ok: int
    tokens: int  # tokens of ok documents
    fields: str  # the rows' fields as an arrow schema (IPC bytes, base64)

    def fields_schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.fields)))


def shard_key(index: int, path: str | Path) -> str:
    """Directory name of an input shard's scores: its position (keeps order) and a readable name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name)[:80]
    return f"{index:05d}-{name}"


def score_chunk(engine: Engine, docs: Sequence[Document], first_row: int) -> pa.Table:
    """One row per document; readable ones scored in a single engine call (one bucketing pool)."""
    texts = [d.text for d in docs if d.text is not None]
    scores = iter(engine.score(texts))
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


def score_input_shard(
    path: str | Path,
    engine: Engine,
    shard_dir: Path,
    *,
    text_field: str = "text",
    id_field: str = "id",
    chunk_docs: int = 2048,
    cancel: threading.Event | None = None,
    progress: ProgressFn | None = None,
) -> ShardScoreSummary:
    """Scores every row of `path` into `shard_dir`; returns (and leaves) the completion marker."""
    done = shard_dir / DONE_MARKER
    if done.is_file():
        summary = ShardScoreSummary(**json.loads(done.read_text()))
        if progress is not None:
            progress(summary.rows, summary.tokens)
        return summary
    shard_dir.mkdir(parents=True, exist_ok=True)
    docs = read_documents(path, text_field=text_field, id_field=id_field)
    rows = ok = tokens = 0
    schemas: list[pa.Schema] = []
    for index, chunk in enumerate(_chunks(docs, chunk_docs)):
        if cancel is not None and cancel.is_set():
            raise JobCancelledError(f"cancelled while scoring {str(path)!r} at row {rows}")
        chunk_path = shard_dir / chunk_name(index)
        if chunk_path.is_file():
            table = pq.read_table(chunk_path)
        else:
            table = score_chunk(engine, chunk, rows)
            write_parquet_atomic(chunk_path, table)
        chunk_ok, chunk_tokens = chunk_counts(table)
        schemas.append(fields_from_metadata(table.schema))
        rows += len(chunk)
        ok += chunk_ok
        tokens += chunk_tokens
        if progress is not None:
            progress(len(chunk), chunk_tokens)
    return finish_shard(path, shard_dir, rows=rows, ok=ok, tokens=tokens, chunk_docs=chunk_docs, schemas=schemas)


def chunk_counts(table: pa.Table) -> tuple[int, int]:
    """(documents scored ok, their tokens) in one chunk's score table."""
    chunk_ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok")
    return int(chunk_ok.sum()), int(np.asarray(table.column("n_tokens"))[chunk_ok].sum())


def finish_shard(
    path: str | Path, shard_dir: Path, *, rows: int, ok: int, tokens: int, chunk_docs: int, schemas: list[pa.Schema]
) -> ShardScoreSummary:
    """Write an input shard's completion marker (whichever engine scored its chunks)."""
    summary = ShardScoreSummary(
        input=str(path),
        rows=rows,
        chunks=(rows + chunk_docs - 1) // chunk_docs,
        ok=ok,
        tokens=tokens,
        fields=schema_b64(unify_fields(schemas)),
    )
    write_json_atomic(shard_dir / DONE_MARKER, asdict(summary))
    return summary


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.parquet"


def read_shard_scores(
    shard_dir: Path, summary: ShardScoreSummary, columns: Sequence[str] | None = None
) -> pa.Table:
    """All chunks of a finished shard, in row order."""
    tables = [
        pq.read_table(shard_dir / chunk_name(i), columns=list(columns) if columns else None)
        for i in range(summary.chunks)
    ]
    if not tables:
        return SCORES_SCHEMA.empty_table().select(list(columns)) if columns else SCORES_SCHEMA.empty_table()
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables])


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


def fields_from_metadata(schema: pa.Schema) -> pa.Schema:
    """The rows' fields schema that `score_chunk` stores in a scores chunk's metadata."""
    meta = schema.metadata or {}
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(meta[_FIELDS_KEY])))


# Earlier private names, used by corpus/ray_engine.py.
_schema_b64 = schema_b64
_fields_from_metadata = fields_from_metadata
