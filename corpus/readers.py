"""Streaming document readers: jsonl (plain, .gz, .zst), parquet, and `datasets` save_to_disk directories.

Two kinds of failure, kept apart on purpose:
- a *row* that cannot be used (bytes that are not UTF-8, a line that is not JSON or not a JSON object,
  a missing or non-string text field, a blank line) becomes a `Document` with `text=None` and a
  `status` of the form "<kind>: <where and why>". Nothing is dropped silently: the job counts these
  by kind, and a crash on row 9,000,000 of a shard would cost hours.
- a *file* that cannot be read (missing, unknown format, corrupt or truncated compression, a broken
  parquet footer, a text column that is not there at all) raises `InputError` naming the file.

Blank lines in jsonl are rows too (status "blank_line: ..."), so a row's index is always its line
index, and the id fallback (the row index) points at the line a user can open.

Inputs may be local paths or object-store URLs (s3://, gs://, hf://; corpus/storage.py): the same
formats, streamed through fsspec (parquet and arrow files by ranged reads).

Memory does not grow with file size: jsonl is decompressed and split in fixed-size chunks, parquet
is read a batch at a time (at most one row group is decoded at once), arrow files are memory-mapped.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from corpus import confine, storage
from corpus.storage import JobPath
from scoring.errors import InputError

FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "datasets")

# Compressed bytes read at once; the decompressed side is bounded by zstd/zlib output chunking.
_READ_CHUNK = 1 << 20
_ZSTD_READ_CHUNK = 16 << 10
# Rows per arrow batch: small enough that long documents do not balloon a batch.
_BATCH_ROWS = 256
# A JSON \u escape of a UTF-16 surrogate. Only lines containing one need the (slower) check for a
# *lone* surrogate, which Python accepts but UTF-8 (and so parquet) cannot hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())

# Row statuses: the part before ":" is the kind the job counts by.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
NOT_STRING = "not_string"
INVALID_TEXT = "invalid_text"
BLANK_LINE = "blank_line"


@dataclass(frozen=True, slots=True)
class Document:
    """One input row.

    `id` is the id field's value, or the row's index within its file (0-based; for jsonl the line
    index) when the row has none. `text` is None exactly when `status` is not None.
    """

    id: str | int
    text: str | None
    fields: dict[str, Any]
    status: str | None = None

    @property
    def readable(self) -> bool:
        return self.status is None


def status_kind(status: str) -> str:
    """The kind of a row status ("invalid_json: line 3 ..." -> "invalid_json")."""
    return status.split(":", 1)[0]


def _kind(p: JobPath) -> str | None:
    """"dir", "file" (anything else that exists, locally) or None."""
    if isinstance(p, Path):
        return None if not p.exists() else "dir" if p.is_dir() else "file"
    # A store: an object, else a prefix holding objects (one request in the usual case).
    if storage.is_file(p):
        return "file"
    if storage.is_dir(p):
        return "dir"
    storage.check_bucket(p)  # a missing bucket is said as such, not as a missing object
    return None


def detect_format(path: str | JobPath) -> str:
    """One of FORMATS, from the name (files) or the save_to_disk metadata (directories)."""
    p = storage.job_path(path)
    kind = _kind(p)
    if kind is None:
        raise InputError(f"input {str(p)!r} does not exist")
    if kind == "dir":
        if storage.is_file(p / "state.json") or storage.is_file(p / "dataset_dict.json"):
            return "datasets"
        raise InputError(
            f"input {str(p)!r} is a directory but not a `datasets` save_to_disk directory "
            "(no state.json or dataset_dict.json); pass its files instead"
        )
    name = p.name.lower()
    for suffix, fmt in (
        (".jsonl.gz", "jsonl.gz"),
        (".jsonl.zst", "jsonl.zst"),
        (".jsonl", "jsonl"),
        (".parquet", "parquet"),
    ):
        if name.endswith(suffix):
            return fmt
    raise InputError(
        f"input {str(p)!r} has an unknown extension; expected one of .jsonl, .jsonl.gz, .jsonl.zst, .parquet "
        "or a `datasets` directory"
    )


def read_documents(path: str | JobPath, *, text_field: str = "text", id_field: str = "id") -> Iterator[Document]:
    """Every row of one input, in file order, as a Document (streaming)."""
    fmt = detect_format(path)
    p = storage.job_path(path)
    if fmt == "parquet":
        return _parquet_documents(p, text_field, id_field)
    if fmt == "datasets":
        return _datasets_documents(p, text_field, id_field)
    return _jsonl_documents(p, fmt, text_field, id_field)


# ---------------------------------------------------------------------------------------------- jsonl


def _jsonl_documents(path: JobPath, fmt: str, text_field: str, id_field: str) -> Iterator[Document]:
    # Opened here, not inside the generator, so that an unreadable file fails when the reader is made.
    try:
        fh = storage.open_read(path)
    except OSError as exc:
        raise InputError(f"cannot open {str(path)!r}: {exc.strerror or exc}") from exc
    return _jsonl_rows(fh, path, fmt, text_field, id_field)


def _jsonl_rows(fh: BinaryIO, path: JobPath, fmt: str, text_field: str, id_field: str) -> Iterator[Document]:
    with fh:
        chunks = {"jsonl": _plain_chunks, "jsonl.gz": _gzip_chunks, "jsonl.zst": _zstd_chunks}[fmt](fh, path)
        for index, line in enumerate(_split_lines(chunks)):
            yield _parse_line(line, index, text_field, id_field)


def _plain_chunks(fh: BinaryIO, path: JobPath) -> Iterator[bytes]:
    try:
        while chunk := fh.read(_READ_CHUNK):
            yield chunk
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc}") from exc


def _gzip_chunks(fh: BinaryIO, path: JobPath) -> Iterator[bytes]:
    try:
        with gzip.GzipFile(fileobj=fh) as gz:
            while chunk := gz.read(_READ_CHUNK):
                yield chunk
    except (OSError, EOFError, zlib.error) as exc:
        # gzip says "Compressed file ended before the end-of-stream marker" for a truncated file.
        raise InputError(f"corrupt or truncated gzip file {str(path)!r}: {exc}") from exc


def _zstd_chunks(fh: BinaryIO, path: JobPath) -> Iterator[bytes]:
    """Decompress frame by frame, so that a truncated last frame is an error, not a short read.

    (zstandard's stream_reader returns EOF quietly at a cut in the middle of a frame, and read_to_iter
    stops after the first frame.)
    """
    decompressor = zstandard.ZstdDecompressor()
    obj = decompressor.decompressobj()
    in_frame = False
    try:
        # Small input reads: decompressobj returns all the output of its input at once, so this is
        # what bounds memory (x the compression ratio).
        while data := fh.read(_ZSTD_READ_CHUNK):
            while data:
                out = obj.decompress(data)
                in_frame = True
                if out:
                    yield out
                if obj.eof:
                    # Concatenated frames (e.g. `cat a.zst b.zst`) are one valid stream.
                    data = obj.unused_data
                    obj = decompressor.decompressobj()
                    in_frame = False
                else:
                    data = b""
    except zstandard.ZstdError as exc:
        raise InputError(f"corrupt zstd file {str(path)!r}: {exc}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc}") from exc
    if in_frame:
        raise InputError(f"truncated zstd file {str(path)!r}: the stream ends inside a frame")


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines without their b"\\n"; a final line without a newline still counts, a trailing newline
    does not start another (empty) line."""
    pending: list[bytes] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if pending:
                pending.append(chunk[start:end])
                yield b"".join(pending)
                pending.clear()
            else:
                yield chunk[start:end]
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending)


def _parse_line(line: bytes, index: int, text_field: str, id_field: str) -> Document:
    lineno = index + 1
    if index == 0 and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]  # a UTF-8 byte order mark, as some Windows tools write
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _unreadable(
            index,
            f"{INVALID_UTF8}: line {lineno} is not valid UTF-8 (byte {exc.start}: {line[exc.start : exc.start + 1]!r})",
        )
    if not decoded.strip():
        return _unreadable(index, f"{BLANK_LINE}: line {lineno} is empty")
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return _unreadable(
            index, f"{INVALID_JSON}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})"
        )
    if not isinstance(obj, dict):
        return _unreadable(index, f"{NOT_OBJECT}: line {lineno} is a JSON {_json_type(obj)}, not an object")
    if _SURROGATE_ESCAPE.search(line):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return _unreadable(
                index,
                f"{INVALID_TEXT}: line {lineno} holds a lone UTF-16 surrogate escape, which is not text",
            )
    return _document(obj, index, f"line {lineno}", text_field, id_field)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


# ------------------------------------------------------------------------------------ parquet, arrow


def _parquet_documents(path: JobPath, text_field: str, id_field: str) -> Iterator[Document]:
    source: BinaryIO | None = None  # a store's file object, closed with the reader
    try:
        if isinstance(path, Path):
            pf = pq.ParquetFile(confine.parquet_source(path))
        else:
            source = storage.open_read(path)
            pf = pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as exc:
        if source is not None:
            source.close()
        raise InputError(f"cannot read parquet file {str(path)!r}: {exc}") from exc
    _check_text_column(pf.schema_arrow, text_field, path)
    return _parquet_rows(pf, source, path, text_field, id_field)


def _parquet_rows(
    pf: pq.ParquetFile, source: BinaryIO | None, path: JobPath, text_field: str, id_field: str
) -> Iterator[Document]:
    with pf, source or contextlib.nullcontext():
        batches = pf.iter_batches(batch_size=_BATCH_ROWS)
        yield from _batch_documents(_guarded(batches, path, "parquet file"), text_field, id_field)


def _datasets_documents(path: JobPath, text_field: str, id_field: str) -> Iterator[Document]:
    """A Dataset directory, or a DatasetDict directory read split after split (in its listed order)."""
    files = _datasets_arrow_files(path)
    if not files:
        raise InputError(f"`datasets` directory {str(path)!r} lists no data files")
    missing = [str(f) for f in files if not storage.is_file(f)]
    if missing:
        raise InputError(f"`datasets` directory {str(path)!r} lacks its data files {', '.join(missing)}")
    return _datasets_rows(path, files, text_field, id_field)


def _datasets_rows(path: JobPath, files: list[JobPath], text_field: str, id_field: str) -> Iterator[Document]:
    offset = 0
    for file in files:
        try:
            # Local arrow files are memory-mapped; a store's are streamed.
            source = confine.memory_map(file) if isinstance(file, Path) else storage.open_read(file)
            reader = pa.ipc.open_stream(source)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read arrow file {str(file)!r} of {str(path)!r}: {exc}") from exc
        _check_text_column(reader.schema, text_field, file)
        for doc in _batch_documents(_guarded(reader, file, "arrow file"), text_field, id_field, offset):
            offset += 1
            yield doc


def _datasets_arrow_files(path: JobPath) -> list[JobPath]:
    try:
        if storage.is_file(path / "dataset_dict.json"):
            splits = storage.read_json(path / "dataset_dict.json")["splits"]
            return [f for split in splits for f in _datasets_arrow_files(path / split)]
        state = storage.read_json(path / "state.json")
        return [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the save_to_disk metadata of {str(path)!r}: {exc!r}") from exc


def _check_text_column(schema: pa.Schema, text_field: str, path: JobPath) -> None:
    # A column missing from the schema is missing from every row: one clear file-level error
    # beats a shard of identical row statuses (usually it is a wrong --text-field).
    if text_field not in schema.names:
        raise InputError(f"{str(path)!r} has no column {text_field!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(text_field).type
    if kind not in _STRING_TYPES:
        raise InputError(f"column {text_field!r} of {str(path)!r} is {kind}, not a string column")


def _guarded(batches: Iterable[pa.RecordBatch], path: JobPath, what: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"corrupt {what} {str(path)!r}: {exc}") from exc


def _batch_documents(
    batches: Iterable[pa.RecordBatch], text_field: str, id_field: str, offset: int = 0
) -> Iterator[Document]:
    index = offset
    for batch in batches:
        for row in batch.to_pylist():
            yield _document(row, index, f"row {index}", text_field, id_field)
            index += 1


# ------------------------------------------------------------------------------------------- shared


def _document(row: dict[str, Any], index: int, where: str, text_field: str, id_field: str) -> Document:
    doc_id = _doc_id(row.get(id_field), index)
    if text_field not in row:
        return Document(doc_id, None, row, f"{MISSING_FIELD}: {where} has no field {text_field!r}")
    text = row[text_field]
    if not isinstance(text, str):
        kind = "null" if text is None else type(text).__name__
        return Document(
            doc_id, None, row, f"{NOT_STRING}: {where} field {text_field!r} is {kind}, not a string"
        )
    return Document(doc_id, text, row, None)


def _doc_id(value: Any, index: int) -> str | int:
    if value is None:
        return index
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    # Other id types (floats, booleans, nested values) become their JSON spelling, so ids stay hashable.
    return json.dumps(value, sort_keys=True, default=str)


def _unreadable(index: int, status: str, fields: dict[str, Any] | None = None) -> Document:
    return Document(index, None, fields if fields is not None else {}, status)
