"""What every export shares: the manifest read as repeat groups, the staged output directory, and the
record (`export.json`) an export leaves beside its files.

No loader accepts a weight per document, but every one of them repeats or weights whole streams (MDS
streams, Megatron prefixes, HF splits). A manifest's weights are integer repeat counts, so the rows
that share a count form one stream read that many times per epoch: the epoch's multiset is then
exactly the manifest's expanded multiset (each row `repeats` times), with no sampling involved.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corpus import confine, storage
from corpus.fsutil import dumps_json, write_bytes_atomic
from corpus.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    is_url,
    load_manifest,
    resolve_shard,
    shard_base,
)
from corpus.shard_fetch import open_shard
from corpus.storage import JobPath, RemotePath
from scoring.errors import ConfigError, InputError, JobCancelledError

ExportFormat = Literal["mds", "megatron", "hf", "energon"]
EXPORT_RECORD = "export.json"
EXPORT_FORMAT = "reweigh.export"
EXPORT_FORMAT_VERSION = 1
VERSION_CHECK = "export_versions.py"  # imported by every loader script


class ExportOptions(BaseModel):
    """How to export, whatever is exported and wherever to: what a service client chooses (the
    export route's body and each entry of a job's `exports`), the rest of ExportConfig being the
    service's to decide."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: ExportFormat
    overwrite: bool = Field(default=False, description="replace an existing export directory")
    allow_other_tokenizer: bool = Field(
        default=False,
        description="megatron: accept a tokenizer whose vocabulary differs from the scoring pair's",
    )
    mds_shard_bytes: int = Field(default=1 << 26, ge=1 << 10, lt=1 << 32, description="mds: bytes per shard at most")
    hf_shard_rows: int = Field(default=100_000, ge=1, description="hf: rows per parquet file at most")
    energon_shard_rows: int = Field(default=10_000, ge=1, description="energon: samples per tar shard at most")


class ExportConfig(ExportOptions):
    """One export, declared once (with ExportOptions): the CLI flags, the HTTP body and the job
    option are this model, or its options."""

    manifest: str = Field(
        description="a manifest.json, or the finished job directory holding it (a path or a store URL)"
    )
    out: str = Field(
        description="the export directory, a path or a store URL (created; refused if it exists, unless overwrite)"
    )
    tokenizer: str | None = Field(
        default=None, description="megatron: a tokenizer directory (default: the service's teacher)"
    )

    @model_validator(mode="after")
    def _check(self) -> ExportConfig:
        if is_url(self.manifest):
            raise ConfigError(
                f"manifest={self.manifest!r}: exports read a manifest from a path or a store URL, not an http(s) URL"
            )
        if self.format != "megatron" and (self.tokenizer is not None or self.allow_other_tokenizer):
            raise ConfigError(
                f"tokenizer={self.tokenizer!r} is only used by format='megatron', not {self.format!r}"
            )
        return self


def export_config(**values: Any) -> ExportConfig:
    """ExportConfig from untyped values (CLI flags, an HTTP body): a bad one is a ConfigError naming it."""
    try:
        return ExportConfig(**values)
    except ValidationError as exc:
        raise ConfigError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from exc


@dataclass(frozen=True)
class Group:
    """The rows that share one repeat count: one stream / prefix / split of the export."""

    repeats: int
    name: str  # file-system and split safe: repeat_3
    rows: int = 0
    tokens: int = 0  # reweigh's n_tokens (the scoring tokenizer's count), each row once


@dataclass
class GroupStats:
    rows: dict[int, int] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)

    def add(self, repeats: int, rows: int, tokens: int) -> None:
        self.rows[repeats] = self.rows.get(repeats, 0) + rows
        self.tokens[repeats] = self.tokens.get(repeats, 0) + tokens

    def groups(self) -> list[Group]:
        return [Group(r, group_name(r), self.rows[r], self.tokens[r]) for r in sorted(self.rows)]


def group_summary(group: Group, **fields: Any) -> dict[str, Any]:
    """One group as `export.json` lists it: what every format records, then the format's own `fields`."""
    return {
        "name": group.name,
        "repeats": group.repeats,
        "rows": group.rows,
        "documents": group.rows * group.repeats,  # what one epoch reads from it
        **fields,
    }


def column_sum(batch: pa.RecordBatch, name: str) -> int:
    return int(pc.sum(batch.column(name)).as_py() or 0)


def group_name(repeats: int) -> str:
    return f"repeat_{repeats}"


@dataclass(frozen=True)
class ManifestSource:
    manifest: Manifest
    base: str
    # Set by the service to stop an export between row groups (every exporter reads through
    # `batches`); the staged directory is then removed, as on any failure.
    cancel: threading.Event | None = field(default=None, compare=False, repr=False)
    _verified: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def open(cls, location: str, cancel: threading.Event | None = None) -> ManifestSource:
        if not storage.is_remote(location):  # a store URL is checked by storage, on every access
            confine.check(location)  # as the shards are, when confined (the manifest is read whole, here)
        return cls(load_manifest(location), shard_base(location), cancel)

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.base)

    def metadata(self, entry: ShardEntry) -> pq.FileMetaData:
        """A shard's parquet footer. On a store, read by range, footer only: its bytes are checked
        against the manifest's sha256 when `batches` reads them, before the export is published."""
        if not self.remote:
            return self.parquet(entry).metadata
        path = storage.job_path(resolve_shard(self.base, entry.path))
        with storage.open_read(path) as fh:
            return pq.ParquetFile(fh).metadata

    @contextlib.contextmanager
    def opened(self, entry: ShardEntry) -> Iterator[pq.ParquetFile]:
        """The shard to read. On a store, downloaded to a temporary file and hashed as it arrives
        (corpus/shard_fetch.py: a mismatch is an InputError), removed when done."""
        if not self.remote:
            yield self.parquet(entry)
            return
        shard = open_shard(self.base, entry, headers=None, verify=True)
        try:
            yield shard.file
        finally:
            shard.close()

    def parquet(self, entry: ShardEntry) -> pq.ParquetFile:
        """A local shard, its sha256 checked first, once per export: an export of a changed shard
        would silently disagree with the manifest, and a truncated one is named rather than left to
        fail in the parquet reader."""
        path = resolve_shard(self.base, entry.path)
        if path not in self._verified:
            if _sha256(Path(path)) != entry.sha256:
                raise InputError(
                    f"shard {path!r} does not match the manifest's sha256 (changed or truncated)"
                )
            self._verified.add(path)
        return pq.ParquetFile(confine.parquet_source(path))

    def batches(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(repeat count, rows) in manifest order, one parquet row group at a time."""
        for entry in self.manifest.shards:
            path = resolve_shard(self.base, entry.path)
            documents = 0
            with self.opened(entry) as parquet:
                for i in range(parquet.num_row_groups):
                    if self.cancel is not None and self.cancel.is_set():
                        raise JobCancelledError(f"export cancelled while reading shard {entry.path!r}")
                    batch = parquet.read_row_group(i)
                    repeats = batch.column("repeats")
                    documents += int(pc.sum(repeats).as_py() or 0)
                    for r in pc.unique(repeats).to_pylist():
                        if r is None or r < 1:
                            raise InputError(
                                f"shard {path!r} has a row with repeats={r!r}; kept rows repeat >= 1"
                            )
                        for part in batch.filter(pc.equal(repeats, r)).to_batches():
                            yield int(r), part
            if documents != entry.documents:
                raise InputError(
                    f"shard {path!r} holds {documents} documents, the manifest says {entry.documents}"
                )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with confine.open_read(path) as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_directory(out: JobPath, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `out` to build into, renamed onto `out` on success and removed on any
    failure: an export directory is either absent or whole (like a job without its manifest).

    On a store, the directory is built in a local temporary directory (as much local disk as the
    export), then uploaded with export.json last (storage.publish_tree): a reader takes an export
    prefix for whole only once export.json is there."""
    if storage.exists(out) and not overwrite:
        unfinished = isinstance(out, RemotePath) and not storage.is_file(out / EXPORT_RECORD)
        raise ConfigError(
            f"out={str(out)!r} exists"
            + (f" (objects without {EXPORT_RECORD}: an interrupted export?)" if unfinished else "")
            + "; pass overwrite=True (--overwrite) to replace it"
        )
    if isinstance(out, RemotePath):
        storage.check_bucket(out)  # a missing bucket is named before the export is built
        tmp = Path(tempfile.mkdtemp(prefix="reweigh-export-"))
        try:
            with confine.also_private(tmp):
                yield tmp
            storage.publish_tree(tmp, out, last=EXPORT_RECORD)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    confine.check(out.parent)  # in a service job: the directory may have been swapped for a symlink
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_loader_script(name: str, directory: Path) -> str:
    """Copy the stand-alone loader script (stdlib + the loader library only: it runs in the trainer's
    environment, where reweigh is not installed) into the export; returns its file name."""
    package = importlib.resources.files("corpus.export.loaders")
    for file in (name, VERSION_CHECK):
        (directory / file).write_text(package.joinpath(file).read_text())
    return name


def write_record(
    directory: Path, config: ExportConfig, source: ManifestSource, body: dict[str, Any]
) -> dict[str, Any]:
    """`export.json`: which manifest (by digest) this export reproduces, and how; written last."""
    record = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "export": config.format,
        "manifest": {
            "path": _manifest_location(config.manifest),
            "digest": source.manifest.fingerprint.get("digest"),
            "rows_out": source.manifest.totals.rows_out,
            "documents_out": source.manifest.totals.documents_out,
            "tokens_out": source.manifest.totals.tokens_out,
        },
        **body,
    }
    write_bytes_atomic(directory / EXPORT_RECORD, dumps_json(record))
    return record


def _manifest_location(manifest: str) -> str:
    """The manifest file's absolute path, or its URL."""
    if storage.is_remote(manifest):
        url = manifest.rstrip("/")
        return url if url.endswith("/" + MANIFEST_NAME) else f"{url}/{MANIFEST_NAME}"
    path = Path(manifest.removeprefix("file://")).resolve()
    return str(path / MANIFEST_NAME if path.is_dir() else path)


def check_expanded_totals(source: ManifestSource, groups: list[Group]) -> None:
    """The groups, each counted `repeats` times, must be the manifest's epoch: a last guard."""
    documents = sum(g.repeats * g.rows for g in groups)
    rows = sum(g.rows for g in groups)
    totals = source.manifest.totals
    if documents != totals.documents_out or rows != totals.rows_out:
        raise InputError(
            f"the export holds rows={rows}, documents={documents}; "
            f"the manifest says rows_out={totals.rows_out}, documents_out={totals.documents_out}"
        )
