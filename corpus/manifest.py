"""The manifest: what a finished rewrite produced, and the one file a trainer needs to read it.

A directory holds a finished job exactly when it holds `manifest.json` (written last, atomically).
Shard paths are relative (`shards/part-00000.parquet`) and resolve against where the manifest was
found: a local file -> its directory; a URL ending in `/manifest.json` -> that URL's directory; an
object-store URL (s3://, gs://, hf://) of a job directory -> that prefix; any other http(s) URL (the
service serves manifests at `.../v1/manifests/{job_id}`) -> the URL + "/". A job directory copied
between stores therefore reads the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corpus import storage
from corpus.fsutil import dumps_json
from corpus.storage import JobPath, RemotePath
from scoring.errors import InputError, NotFoundError

MANIFEST_NAME = "manifest.json"
FORMAT = "reweigh.manifest"
FORMAT_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShardEntry(_Frozen):
    path: str  # relative to the manifest's location, "/"-separated
    rows: int = Field(ge=0)  # parquet rows (distinct documents)
    documents: int = Field(ge=0)  # rows counted with their repeats: what one epoch yields
    tokens: int = Field(ge=0)  # tokens counted with repeats
    bytes: int = Field(ge=0)
    sha256: str


class SkippedInput(_Frozen):
    path: str
    reason: str


class InputEntry(_Frozen):
    path: str
    format: str
    rows: int


class Totals(_Frozen):
    documents_in: int  # rows read from the inputs, unreadable ones included
    tokens_in: int  # tokens of the documents that were scored
    rows_out: int  # distinct documents kept
    documents_out: int  # kept documents counted with their repeats
    tokens_out: int  # tokens counted with repeats


class Partition(_Frozen):
    rank: int
    world_size: int


class Manifest(_Frozen):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    # Everything that decided the output: engine fingerprint, selection, seed, fields, code version.
    fingerprint: dict[str, Any]
    columns: list[str]
    shards: list[ShardEntry]
    totals: Totals
    inputs: list[InputEntry] = []
    skipped_inputs: list[SkippedInput] = []
    # Set on a share made by for_rank: these are that rank's shards only.
    partition: Partition | None = None

    def for_rank(self, rank: int, world_size: int) -> Manifest:
        """The whole shards rank `rank` of `world_size` reads: shard i goes to rank i % world_size.

        No shard is read twice and none is lost; ranks differ by at most one shard (so, with fewer
        shards than ranks, some ranks get none). For a split that is balanced to the document, hand
        the full manifest to `corpus.loader.ManifestDataset` with rank and world_size instead.
        """
        if world_size < 1 or not (0 <= rank < world_size):
            raise InputError(f"rank={rank} must be in [0, world_size={world_size})")
        if self.partition is not None:
            raise InputError(
                f"this manifest is already the share of rank {self.partition.rank}/{self.partition.world_size}"
            )
        mine = self.shards[rank::world_size]
        totals = self.totals.model_copy(
            update={
                "rows_out": sum(s.rows for s in mine),
                "documents_out": sum(s.documents for s in mine),
                "tokens_out": sum(s.tokens for s in mine),
            }
        )
        return self.model_copy(
            update={
                "shards": mine,
                "totals": totals,
                "partition": Partition(rank=rank, world_size=world_size),
            }
        )

    def to_json_bytes(self) -> bytes:
        return dumps_json(self.model_dump(mode="json"))


def write_manifest(directory: str | JobPath, manifest: Manifest) -> JobPath:
    path = storage.job_path(directory) / MANIFEST_NAME
    storage.write_bytes(path, manifest.to_json_bytes())
    return path


def parse_manifest(data: bytes | str, source: str) -> Manifest:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise InputError(f"manifest {source!r} is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InputError(
            f"{source!r} is not a reweigh manifest (format={raw.get('format') if isinstance(raw, dict) else None!r})"
        )
    if raw.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"manifest {source!r} has format_version={raw.get('format_version')!r}; this reweigh reads {FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"manifest {source!r} is malformed: {exc}") from exc


def is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


def load_manifest(path_or_url: str | JobPath, headers: dict[str, str] | None = None) -> Manifest:
    """From a local file or job directory, an object-store URL of either, or an http(s) URL."""
    location = str(path_or_url)
    if is_url(location):
        return parse_manifest(http_get(location, headers), location)
    path = storage.job_path(path_or_url)
    # A store prefix is no object: a URL not naming the manifest names its job directory.
    if path.name != MANIFEST_NAME if isinstance(path, RemotePath) else storage.is_dir(path):
        path = path / MANIFEST_NAME
    if isinstance(path, RemotePath):
        storage.check_bucket(path)  # a missing bucket or credentials named as such, not as "no manifest"
    if not storage.is_file(path):
        raise NotFoundError(f"no manifest at {str(path)!r} (a job directory without one is not finished)")
    return parse_manifest(storage.read_bytes(path), str(path))


def shard_base(path_or_url: str | JobPath) -> str:
    """What shard paths are relative to (see the module docstring)."""
    location = str(path_or_url)
    if is_url(location) or storage.is_remote(location):
        if location.endswith("/" + MANIFEST_NAME):
            return location[: -len(MANIFEST_NAME)]
        return location.rstrip("/") + "/"
    path = Path(location.removeprefix("file://"))
    return str(path if path.is_dir() else path.parent)


def resolve_shard(base: str, relative: str) -> str:
    if Path(relative).is_absolute() or ".." in Path(relative).parts or "://" in relative:
        raise InputError(f"shard path {relative!r} escapes the manifest's directory")
    if is_url(base) or storage.is_remote(base):
        return base + relative
    return str(Path(base) / relative)


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> bytes:
    import httpx

    try:
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot fetch {url!r}: {exc}") from exc
    if response.status_code == 404:
        raise NotFoundError(f"{url!r} not found (HTTP 404)")
    if response.status_code >= 400:
        raise InputError(f"cannot fetch {url!r}: HTTP {response.status_code} {response.text[:200]!r}")
    return response.content
