"""Open a manifest's shard for row-group reads, its sha256 checked, in bounded memory.

A local shard is hashed in 4 MiB chunks and then read in place. A remote one (http(s), or an
object store through corpus/storage.py) is streamed to a temporary file (hashed as it arrives),
so neither path ever holds a whole shard in memory; the loader then reads one parquet row group at
a time. Whole downloads, not ranged reads: every DataLoader worker reads nearly every row group of
the shards it opens (workers take turns by batch), so ranges would fetch as much
(bench/loader_store.py measures it), and the whole shard can be checked against its sha256.
`Prefetcher` downloads the next remote shard in a background thread while the current one is read.

Without a cache, a downloaded shard is removed when it is closed (at most the current and the next
shard per reader are on disk). With a `ShardCache`, downloaded shards stay on local disk, named by
their sha256, up to a byte limit: the least recently used ones are evicted past it, so a training
node reads a corpus many times its disk over epochs. A shard enters the cache only when its bytes
matched the manifest's sha256 as they arrived, and is trusted from then on (the name is the hash).
Several reader processes (DataLoader workers, ranks on one node) may share one cache directory:
entries appear by rename, a shard is downloaded once for all of them (a lock per shard, under
`locks/`: a node's workers reach the same shard at about the same time), and a shard evicted while
another process reads it stays readable to that process until it closes it (POSIX unlink semantics).

A download in progress is a `reweigh-shard-*.part` file, held under an exclusive flock by the process
writing it. A process killed mid-download leaves its `.part` behind (the kernel drops the lock):
`remove_orphaned_parts`, run when a dataset opens its cache directory, removes those that
no live process holds and that have not been written to for a minute (the grace covers the instant
between creating a file and locking it). `.part` files are never read as shards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from corpus import storage
from corpus.manifest import ShardEntry, is_url, resolve_shard
from scoring.errors import ConfigError, InputError, NotFoundError

_CHUNK = 1 << 22
_PART_PREFIX, _PART_SUFFIX = "reweigh-shard-", ".part"
ORPHAN_GRACE_S = 60.0


@dataclass
class OpenShard:
    location: str
    file: pq.ParquetFile
    temporary: Path | None  # the downloaded copy of a remote shard, removed by close()

    def close(self) -> None:
        self.file.close()
        if self.temporary is not None:
            self.temporary.unlink(missing_ok=True)


def _hash_local(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_file(directory: str | None) -> tuple[int, Path]:
    """A new `.part` file, locked for as long as its descriptor is open (see remove_orphaned_parts)."""
    fd, name = tempfile.mkstemp(prefix=_PART_PREFIX, suffix=_PART_SUFFIX, dir=directory)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, Path(name)


def remove_orphaned_parts(directory: Path, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Removes the `.part` files of downloads whose process died (no lock held, untouched for
    `grace_s`); returns how many. A live download holds its lock and is left alone."""
    removed = 0
    now = time.time()
    for path in directory.glob(f"{_PART_PREFIX}*{_PART_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # finished (renamed) or removed meanwhile
        try:
            if now - os.fstat(fd).st_mtime < grace_s:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process is writing it
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        finally:
            os.close(fd)
    return removed


def _to_part(chunks: Generator[bytes, None, None], directory: str | None) -> tuple[Path, str]:
    """`chunks` streamed into a new `.part` file and hashed as they pass: (its path, sha256). The
    part is removed whatever fails, the source (named by its own errors) or the disk."""
    fd, path = _part_file(directory)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, contextlib.closing(chunks):
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest()


def _http_chunks(url: str, headers: dict[str, str] | None) -> Generator[bytes, None, None]:
    import httpx

    try:
        with httpx.stream("GET", url, headers=headers, timeout=60.0, follow_redirects=True) as response:
            if response.status_code == 404:
                raise NotFoundError(f"{url!r} not found (HTTP 404)")
            if response.status_code >= 400:
                raise InputError(f"cannot fetch {url!r}: HTTP {response.status_code}")
            yield from response.iter_bytes(_CHUNK)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot fetch {url!r}: {exc}") from exc


def _object_chunks(url: str) -> Generator[bytes, None, None]:
    try:
        with storage.open_read(storage.job_path(url)) as source:
            while chunk := source.read(_CHUNK):
                yield chunk
    except FileNotFoundError as exc:
        raise NotFoundError(f"shard {url!r} not found in the store") from exc


def _download(url: str, headers: dict[str, str] | None, directory: str | None) -> tuple[Path, str]:
    """An http(s) shard, streamed to a temporary file."""
    return _to_part(_http_chunks(url, headers), directory)


def _download_object(url: str, directory: str | None) -> tuple[Path, str]:
    """An object-store shard, streamed to a temporary file (the store's errors are named ones)."""
    return _to_part(_object_chunks(url), directory)


@dataclass(frozen=True)
class ShardCache:
    """Remote shards kept in `directory`, at most `limit_bytes` of them (least recently used out)."""

    directory: Path
    limit_bytes: int

    def prepare(self, shards: list[ShardEntry]) -> None:
        """Checks the limit, creates the directory, and clears what killed downloads left there."""
        self.check_fits(shards)
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_orphaned_parts(self.directory)

    def check_fits(self, shards: list[ShardEntry]) -> None:
        """A reader holds the shard it reads and the one it prefetches: both must fit."""
        largest = sorted((s.bytes for s in shards), reverse=True)[:2]
        if sum(largest) > self.limit_bytes:
            raise ConfigError(
                f"cache_limit_bytes={self.limit_bytes} is below the {sum(largest)} bytes of the two largest "
                "shards (the one read and the one prefetched)"
            )

    def path_of(self, entry: ShardEntry) -> Path:
        return self.directory / f"{entry.sha256}.parquet"

    @contextlib.contextmanager
    def fetching(self, entry: ShardEntry) -> Iterator[None]:
        """Held while a shard is looked up and, if missing, downloaded: the processes sharing the
        cache (a node's DataLoader workers, which reach the same shard at about the same time)
        wait for one download instead of each fetching the shard. The lock files (empty, one per
        shard) stay: removing a lock file others may be waiting on would let two holders in."""
        locks = self.directory / "locks"
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / f"{entry.sha256}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when a killed holder's descriptors close
            yield
        finally:
            os.close(fd)

    def lookup(self, entry: ShardEntry) -> Path | None:
        path = self.path_of(entry)
        try:
            os.utime(path)  # recently used: evicted last
        except FileNotFoundError:
            return None
        return path

    def admit(self, downloaded: Path, entry: ShardEntry) -> Path:
        """Moves a verified download into the cache, then evicts down to the limit (never `entry`)."""
        final = self.path_of(entry)
        os.replace(downloaded, final)
        self.evict(keep=final)
        return final

    def evict(self, keep: Path) -> None:
        entries = []
        for path in self.directory.glob("*.parquet"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # another reader evicted it meanwhile
            entries.append((st.st_mtime_ns, path.name, st.st_size, path))
        total = sum(e[2] for e in entries)
        for _, _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def open_shard(
    base: str,
    entry: ShardEntry,
    *,
    headers: dict[str, str] | None,
    verify: bool,
    spool_dir: str | None = None,
    cache: ShardCache | None = None,
) -> OpenShard:
    location = resolve_shard(base, entry.path)
    if not (is_url(location) or storage.is_remote(location)):
        path = Path(location)
        if verify and _hash_local(path) != entry.sha256:
            raise InputError(f"shard {location!r} does not match the manifest's sha256 (changed or truncated)")
        return OpenShard(location, pq.ParquetFile(path), None)
    if cache is None:
        return _fetched(location, entry, headers, verify, spool_dir, None)
    with cache.fetching(entry):
        cached = cache.lookup(entry)
        if cached is not None:
            return OpenShard(location, pq.ParquetFile(cached), None)
        return _fetched(location, entry, headers, verify, str(cache.directory), cache)


def _fetched(
    location: str,
    entry: ShardEntry,
    headers: dict[str, str] | None,
    verify: bool,
    directory: str | None,
    cache: ShardCache | None,
) -> OpenShard:
    """A remote shard downloaded (hashed as it arrives), checked, and admitted to `cache` if any."""
    if is_url(location):
        temporary, digest = _download(location, headers, directory)
    else:
        temporary, digest = _download_object(location, directory)
    if verify and digest != entry.sha256:
        temporary.unlink(missing_ok=True)
        raise InputError(f"shard {location!r} does not match the manifest's sha256 (changed or truncated)")
    if cache is not None and digest == entry.sha256:
        return OpenShard(location, pq.ParquetFile(cache.admit(temporary, entry)), None)
    return OpenShard(location, pq.ParquetFile(temporary), temporary)


class Prefetcher:
    """Opens shards in the order they will be needed, one ahead, in a background thread: the next
    remote shard downloads while the current one is read."""

    def __init__(self, opener: Callable[[int], OpenShard], order: list[int]) -> None:
        self._opener, self._order = opener, order
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reweigh-prefetch")
        self._next: Future[OpenShard] | None = None
        self._position = 0

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> tuple[int, OpenShard]:
        if self._position >= len(self._order):
            raise StopIteration
        current = self._next or self._pool.submit(self._opener, self._order[self._position])
        shard = self._order[self._position]
        self._position += 1
        self._next = (
            self._pool.submit(self._opener, self._order[self._position])
            if self._position < len(self._order)
            else None
        )
        return shard, current.result()

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            try:
                if not self._next.cancelled():
                    self._next.result().close()
            except Exception:
                pass  # it failed in the background; nobody is waiting for it any more
        self._pool.shutdown(wait=True)
