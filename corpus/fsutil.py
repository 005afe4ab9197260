"""Atomic, deterministic file writes. Every file a job leaves is either complete or absent.

A write goes to a temporary name in the same directory, is fsynced, then renamed over the final
name (os.replace is atomic on POSIX). A SIGKILL leaves at most a stray `.tmp` file, which readers
never look at and the next run removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from corpus import confine

TMP_SUFFIX = ".tmp"

# Fixed writer options: the same table gives the same bytes on every run (parquet files carry no
# timestamps; "created_by" names the pyarrow version, which the job fingerprint also records).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "use_content_defined_chunking": False,
}


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write; on success it is fsynced and renamed to `path`."""
    final = Path(path)
    confine.check(final.parent)  # under a job's confinement: refuse a directory swapped for a symlink
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(final)
    try:
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        raise _naming(exc, final) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _naming(exc: OSError, final: Path) -> OSError:
    """The error with the file being written as its filename (pyarrow's IO errors name none, and the
    temporary name means nothing to a reader); its errno recovered from the message if need be."""
    code = exc.errno
    if code is None:
        match = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
        code = int(match.group(1)) if match else None
    if code is None:
        return exc
    return OSError(code, os.strerror(code), str(final))


def _fsync_dir(directory: Path) -> None:
    # The rename itself must survive a power cut, not only the data.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def dumps_json(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, fixed indentation, trailing newline): stable bytes for equal data."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, dumps_json(obj))


def write_parquet_atomic(path: str | Path, table: pa.Table, *, row_group_size: int | None = None) -> None:
    # Schema-level metadata is dropped unless given on purpose: it could carry e.g. pandas' index info.
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, **PARQUET_OPTIONS)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_tmp(directory: Path) -> int:
    """Leftover temporaries of killed runs (any pid). Returns how many were removed."""
    removed = 0
    if directory.is_dir():
        for p in directory.rglob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
