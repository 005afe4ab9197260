"""Where a job's files live: a local directory, or a prefix of an object store (s3://, gs://, hf://).

Local paths stay `pathlib.Path` and keep their exact behaviour (corpus/fsutil.py: temporary file,
fsync, rename, directory fsync). Anything with a URL scheme other than file:// is a `RemotePath`,
reached through fsspec, with credentials from each library's usual environment and config files
(AWS_ACCESS_KEY_ID / AWS_PROFILE / ~/.aws, AWS_ENDPOINT_URL for S3-compatible stores; Google
application-default credentials; HF_TOKEN).

An object store has no rename and no directory fsync, so the same guarantee is kept another way:
an object is uploaded whole under its final key only once its bytes are complete (a single PUT, or
a multipart upload completed last), which S3 and GCS make visible atomically. A killed writer
leaves no partial object (at most an incomplete multipart upload, which is invisible; a bucket
lifecycle rule aborts those). Callers keep the order (a shard, then its marker; the manifest last).

Every remote call goes through `_translated`, which turns the libraries' errors into the named
errors of scoring/errors.py, each naming the URL (the service maps those to HTTP in one place).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from corpus import confine, fsutil
from scoring.errors import (
    BucketNotFoundError,
    InputError,
    StorageCredentialsError,
    StorageError,
    StoragePermissionError,
)

# http(s) locations are the service's manifest URLs, read with httpx (corpus/manifest.py), not here.
_NOT_REMOTE = ("", "file", "http", "https")
_GLOB_MAGIC = frozenset("*?[")
# Schemes whose URL's first component is a bucket (hf://datasets/org/name has none).
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az"})
# Class names of the "no credentials found" errors of botocore, google-auth and huggingface_hub:
# matched by name so that none of those libraries has to be importable.
_CREDENTIAL_ERRORS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "DefaultCredentialsError"}
)


@dataclass(frozen=True)
class RemotePath:
    """An object (or a prefix of objects) in a store: `s3://bucket/prefix/name`. Joins like a Path."""

    url: str

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.url.rstrip("/") + "/" + str(part).strip("/"))

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.url.rstrip("/").rsplit("/", 1)[0])

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc


JobPath = Path | RemotePath


def is_remote(location: str | Path | RemotePath) -> bool:
    if isinstance(location, RemotePath):
        return True
    if isinstance(location, Path):
        return False
    return urlsplit(location).scheme.lower() not in _NOT_REMOTE and "://" in location


def job_path(location: str | Path | RemotePath) -> JobPath:
    """A Path for a local location (file:// stripped), a RemotePath for a store URL."""
    if isinstance(location, Path | RemotePath):
        return location
    if is_remote(location):
        return RemotePath(location.rstrip("/"))
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    return Path(location)


# ---------------------------------------------------------------------------------------- errors


def _credential_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in _CREDENTIAL_ERRORS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _translated(target: RemotePath) -> Iterator[None]:
    """The store's errors, as named errors naming `target`'s URL. A missing object stays a
    FileNotFoundError (callers say what was missing); a missing bucket is BucketNotFoundError."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        if _is_bucket_missing(exc, target):
            raise BucketNotFoundError(f"bucket {target.bucket!r} of {target.url!r} does not exist") from exc
        raise FileNotFoundError(exc.errno, f"no object at {target.url!r}", target.url) from exc
    except PermissionError as exc:
        raise StoragePermissionError(f"access to {target.url!r} denied by the store: {exc}") from exc
    except Exception as exc:
        if _credential_error(exc):
            raise StorageCredentialsError(
                f"no credentials to reach {target.url!r}: set them the store's usual way "
                "(e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE for s3://)"
            ) from exc
        raise


def _is_bucket_missing(exc: FileNotFoundError, target: RemotePath) -> bool:
    if "NoSuchBucket" in repr(exc.__cause__) or "bucket does not exist" in str(exc).lower():
        return True
    if not _has_buckets(target):
        return False
    fs, _ = _fs(target)
    try:
        fs.info(target.bucket)
    except FileNotFoundError:
        return True
    except Exception:
        return False  # not known to be missing: the original error stands
    return False


def _has_buckets(target: RemotePath) -> bool:
    return urlsplit(target.url).scheme.lower() in _BUCKET_SCHEMES


def _fs(target: RemotePath) -> tuple[Any, str]:
    """The fsspec filesystem and the store path ("bucket/key") of `target` (instances are cached)."""
    import fsspec

    confine.check_url(target.url)
    try:
        fs, path = fsspec.core.url_to_fs(target.url)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {target.url!r}: {exc}") from exc
    return fs, path


def check_bucket(target: RemotePath) -> None:
    """BucketNotFoundError (or a credentials / permission error) before any work is done there.
    (Not `exists`: fsspec's answers False where the store said "no credentials".)"""
    if not _has_buckets(target):
        return
    fs, _ = _fs(target)
    with _translated(target):
        try:
            fs.info(target.bucket)
        except FileNotFoundError as exc:
            raise BucketNotFoundError(f"bucket {target.bucket!r} of {target.url!r} does not exist") from exc


# ---------------------------------------------------------------------------------------- reading


def is_file(path: JobPath) -> bool:
    if isinstance(path, Path):
        return path.is_file()
    fs, key = _fs(path)
    with _translated(path):
        return bool(fs.isfile(key))


def is_dir(path: JobPath) -> bool:
    """A local directory, or a prefix that holds at least one object."""
    if isinstance(path, Path):
        return path.is_dir()
    fs, key = _fs(path)
    with _translated(path):
        return bool(fs.isdir(key))


def exists(path: JobPath) -> bool:
    return is_file(path) or is_dir(path)


def names_in(path: JobPath) -> list[str]:
    """The entries directly under a directory or prefix (empty when there is none)."""
    if isinstance(path, Path):
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    fs, key = _fs(path)
    with _translated(path):
        try:
            return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(key, detail=False))
        except FileNotFoundError:
            return []
        finally:
            _forget_listing(fs, key)


def read_bytes(path: JobPath) -> bytes:
    if isinstance(path, Path):
        return path.read_bytes()
    fs, key = _fs(path)
    with _translated(path):
        return bytes(fs.cat_file(key))


def read_json(path: JobPath) -> Any:
    return json.loads(read_bytes(path))


def open_read(path: JobPath) -> BinaryIO:
    """A binary file object to read from (local ones under the active confinement)."""
    if isinstance(path, Path):
        return confine.open_read(path)
    fs, key = _fs(path)
    with _translated(path):
        return fs.open(key, "rb")  # type: ignore[no-any-return]


def read_parquet(path: JobPath, columns: Sequence[str] | None = None) -> pa.Table:
    if isinstance(path, Path):
        return pq.read_table(path, columns=None if columns is None else list(columns))
    with open_read(path) as fh, _translated(path):
        return pq.read_table(fh, columns=None if columns is None else list(columns))


def describe(path: JobPath) -> dict[str, Any]:
    """What identifies an input's content for a rerun: size and mtime (local), size and ETag/version
    (store), so a changed input is noticed."""
    if isinstance(path, Path):
        st = path.stat() if path.exists() else None
        return {"size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None}
    fs, key = _fs(path)
    with _translated(path):
        try:
            info = fs.info(key)
        except FileNotFoundError:
            return {"size": None, "version": None}
    version = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("LastModified")
    return {"size": info.get("size"), "version": None if version is None else str(version)}


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Inputs with their glob patterns expanded, in sorted order. A name that exists as given is
    kept as given (a file called `a*.jsonl` is not a pattern); a pattern matching nothing is an
    InputError naming it."""
    out: list[str] = []
    for item in inputs:
        if not (_GLOB_MAGIC & set(item)) or exists(job_path(item)):
            out.append(item)
            continue
        matches = _glob(item)
        if not matches:
            raise InputError(f"input pattern {item!r} matches nothing")
        out.extend(matches)
    return out


def _glob(pattern: str) -> list[str]:
    target = job_path(pattern)
    if isinstance(target, Path):
        import glob

        return sorted(glob.glob(str(target)))
    fs, key = _fs(target)
    scheme = urlsplit(target.url).scheme
    with _translated(target):
        try:
            return sorted(f"{scheme}://{m}" for m in fs.glob(key))
        finally:
            first_magic = min(i for i, c in enumerate(key) if c in _GLOB_MAGIC)
            _forget_listing(fs, key[:first_magic].rsplit("/", 1)[0])


def _forget_listing(fs: Any, key: str) -> None:
    """fsspec caches directory listings and answers later `is_file`s from them: another process
    (a Ray worker, the next run) may add objects meanwhile, so no listing is kept."""
    fs.invalidate_cache(key)


# ---------------------------------------------------------------------------------------- writing


def write_bytes(path: JobPath, data: bytes) -> None:
    """Complete or absent: local, a temporary file renamed; remote, one upload of the whole object."""
    if isinstance(path, Path):
        fsutil.write_bytes_atomic(path, data)
        return
    fs, key = _fs(path)
    with _translated(path):
        fs.pipe_file(key, data)


def write_json(path: JobPath, obj: Any) -> None:
    write_bytes(path, fsutil.dumps_json(obj))


def write_parquet(path: JobPath, table: pa.Table, *, row_group_size: int | None = None) -> None:
    if isinstance(path, Path):
        fsutil.write_parquet_atomic(path, table, row_group_size=row_group_size)
        return
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, **fsutil.PARQUET_OPTIONS)
    write_bytes(path, sink.getvalue().to_pybytes())


def write_figure(path: JobPath, figure: Any, metadata: dict[str, Any]) -> None:
    """A matplotlib figure as PNG."""
    if isinstance(path, Path):
        with fsutil.atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", metadata=metadata)
        return
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata=metadata)
    write_bytes(path, buffer.getvalue())


def upload_file(local: Path, path: RemotePath) -> None:
    """A finished local file's bytes under `path`, streamed (s3fs: one PUT, or a multipart upload
    completed last), so the object is whole or absent, and memory holds a part, never the file."""
    fs, key = _fs(path)
    with _translated(path):
        fs.put_file(str(local), key)


def publish_tree(staged: Path, out: RemotePath, *, last: str) -> None:
    """A finished local directory published under the prefix `out`, replacing what was there.

    `last` is the file whose presence says the directory is complete (an export's export.json, a
    proxy's proxy.json): an old one is removed first and the new one uploaded after every other
    file, so a reader that waits for it never takes a half-uploaded or half-replaced tree for whole."""
    check_bucket(out)
    if not (staged / last).is_file():
        raise StorageError(f"{str(staged)!r} has no {last}: refusing to publish it to {out.url!r}")
    remove(out / last)
    remove(out)
    files = sorted(p for p in staged.rglob("*") if p.is_file() and p != staged / last)
    try:
        for file in [*files, staged / last]:
            upload_file(file, out / file.relative_to(staged).as_posix())
    except BaseException:
        # The prefix holds nothing but this upload's objects: remove them (a killed process leaves
        # them, without `last`; the next publish replaces them).
        with contextlib.suppress(Exception):
            remove(out)
        raise


def make_dir(path: JobPath) -> None:
    """A local directory (and parents); on a store, prefixes need no creating but the bucket must exist."""
    if isinstance(path, Path):
        path.mkdir(parents=True, exist_ok=True)
    else:
        check_bucket(path)


def remove(path: JobPath) -> None:
    """A file or a whole directory / prefix; nothing when absent."""
    if isinstance(path, Path):
        import shutil

        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return
    fs, key = _fs(path)
    with _translated(path):
        if fs.exists(key):
            fs.rm(key, recursive=True)


def remove_stale_tmp(directory: JobPath) -> int:
    """Leftover temporaries of killed local runs; a store has none (objects appear whole)."""
    return fsutil.remove_stale_tmp(directory) if isinstance(directory, Path) else 0
