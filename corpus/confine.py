"""Confinement of a job's file access to data roots, checked each time a file is opened.

A check at submit time is not enough: between submit and run (or between two reads), a directory can
be swapped for a symlink to somewhere else, and a `datasets` directory can list, or symlink, data
files outside the root. So the service runs each job inside `confined_to(roots)`, and the corpus
readers and writers call `check` / `open_read` on every path they are about to touch. Outside such a
block (the CLI, library use) both are plain pass-throughs: the caller's own paths are trusted.

`open_read` leaves no window between check and use: it walks from the root's directory descriptor,
one component at a time, with O_NOFOLLOW, so a symlink swapped in after the check is refused by the
kernel rather than followed. Writes are checked on the resolved path just before each temporary file
is created (the rename that follows stays in that checked directory).

A root may also be an object-store prefix (`s3://bucket/data/`): a store has no symlinks, so a URL
is allowed exactly when, with no `.` or `..` segment and no empty one, it lies under such a prefix.
Under confinement a URL under no root is refused, so a service cannot be made to reach buckets its
credentials open but its data roots do not name.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from scoring.errors import PathNotAllowedError

_ROOTS: ContextVar[tuple[Path, ...] | None] = ContextVar("reweigh_confine_roots", default=None)
_URL_ROOTS: ContextVar[tuple[str, ...]] = ContextVar("reweigh_confine_url_roots", default=())


def is_url_root(root: str | Path) -> bool:
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


@contextlib.contextmanager
def confined_to(roots: Sequence[Path | str]) -> Iterator[None]:
    """File access by corpus code in this thread (context) must stay under `roots` (real paths, or
    object-store prefixes such as s3://bucket/data)."""
    local = tuple(Path(os.path.realpath(r)) for r in roots if not is_url_root(r))
    urls = tuple(str(r).rstrip("/") + "/" for r in roots if is_url_root(r))
    token, url_token = _ROOTS.set(local), _URL_ROOTS.set(urls)
    try:
        yield
    finally:
        _ROOTS.reset(token)
        _URL_ROOTS.reset(url_token)


@contextlib.contextmanager
def also_private(directory: Path) -> Iterator[None]:
    """Under an active confinement, also allow `directory`: one this process has just made with
    `tempfile.mkdtemp` (mode 0700, a fresh name nobody else can swap a symlink into), where a store
    export stages its files before uploading them."""
    active = active_roots()
    if active is None:
        yield
        return
    with confined_to([*active, directory]):
        yield


def url_under(url: str, roots: Sequence[str]) -> bool:
    """`url` lies under one of the prefixes `roots` (each ending in "/"), with no dot segments."""
    _scheme, sep, rest = url.partition("://")
    if not sep or any(part in (".", "..", "") for part in rest.rstrip("/").split("/")):
        return False
    return any((url.rstrip("/") + "/").startswith(root) for root in roots)


def check_url(url: str) -> str:
    """`url`, refused (PathNotAllowedError) under a confinement none of whose roots holds it."""
    if _ROOTS.get() is None:
        return url
    if not url_under(url, _URL_ROOTS.get()):
        raise PathNotAllowedError(f"{url!r} is outside the data roots")
    return url


def active_roots() -> tuple[Path | str, ...] | None:
    """The active confinement (local roots, then object-store prefixes), or None outside one."""
    local = _ROOTS.get()
    return None if local is None else (*local, *_URL_ROOTS.get())


@contextlib.contextmanager
def carried(roots: Sequence[Path | str] | None) -> Iterator[None]:
    """Re-enter, in another thread or process (a Ray worker), the confinement `active_roots()`
    returned where the work was handed out; None (nothing was confined there) changes nothing."""
    if roots is None:
        yield
        return
    with confined_to(roots):
        yield


def check(path: str | Path, roots: Sequence[Path] | None = None) -> Path:
    """The real path of `path` (following every existing symlink), refused when it leaves the roots.

    `roots` defaults to the active confinement; with none active, `path` is returned unchanged."""
    roots = _ROOTS.get() if roots is None else tuple(roots)
    if roots is None:
        return Path(path)
    real = Path(os.path.realpath(path))
    if _root_of(real, roots) is None:
        # The message does not say where it leads: it may be shown to whoever named the path.
        raise PathNotAllowedError(f"{str(path)!r} leads outside the data roots (through a symlink)")
    return real


def open_read(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading, refused (PathNotAllowedError) if it is or passes through a
    symlink that leaves the roots at the moment it is opened."""
    roots = _ROOTS.get()
    if roots is None:
        return Path(path).open("rb")
    real = check(path, roots)
    root = _root_of(real, roots)
    assert root is not None
    fd = _open_beneath(root, real.relative_to(root).parts, path)
    return os.fdopen(fd, "rb")


def memory_map(path: str | Path) -> pa.MemoryMappedFile:
    """`pa.memory_map(path)`, opened as `open_read` opens it when confined (native and zero-copy,
    unlike handing pyarrow a Python file object)."""
    if _ROOTS.get() is None:
        return pa.memory_map(str(path))
    with open_read(path) as fh:
        # The descriptor's /proc link reopens the very file that was opened, without resolving the
        # path again (Linux); elsewhere, fall back to reading through the Python file object.
        proc = Path(f"/proc/self/fd/{fh.fileno()}")
        if proc.exists():
            return pa.memory_map(str(proc))
        return pa.memory_map(str(check(path)))  # best effort: checked, but not race-free


def parquet_source(path: str | Path) -> str | pa.MemoryMappedFile:
    """What to hand `pq.ParquetFile`: the path itself when not confined (as before), else a file
    opened under confinement."""
    return str(path) if _ROOTS.get() is None else memory_map(path)


def _root_of(real: Path, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        if real == root or real.is_relative_to(root):
            return root
    return None


def _open_beneath(root: Path, parts: tuple[str, ...], shown: str | Path) -> int:
    """openat() each component under `root` without following symlinks (the resolved path has none)."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = getattr(os, "O_DIRECTORY", 0)
    fd = os.open(root, os.O_RDONLY | directory)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | nofollow | (0 if last else directory)
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                # A component became a symlink (or a file) after the path was resolved.
                raise PathNotAllowedError(
                    f"{str(shown)!r} changed while it was opened ({exc.strerror}); refused"
                ) from exc
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd
