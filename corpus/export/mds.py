"""mosaicml-streaming MDS: one stream per repeat count, read `repeat` times per epoch.

Written here, byte for byte as `streaming.MDSWriter` (format version 2, uncompressed, no hashes)
writes it, so reweigh does not need mosaicml-streaming (which pins transformers<5 and numpy<2.2):
a shard is `uint32 samples`, `uint32 offsets[samples + 1]` (absolute), the writer's config as JSON,
then the samples; a sample is one uint32 size per variable-width column, then each column's bytes,
columns in sorted name order. The tests read the export back with the real `StreamingDataset`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from corpus.export.common import (
    ExportConfig,
    Group,
    GroupStats,
    ManifestSource,
    check_expanded_totals,
    column_sum,
    copy_loader_script,
    group_name,
    group_summary,
    write_record,
)
from corpus.fsutil import dumps_json
from scoring.errors import InputError

LOADER = "load_mds.py"
_VERSION = 2
_BYTES_PER_SAMPLE = 4  # its offset


def column_encodings(source: ManifestSource) -> dict[str, str]:
    """Per column, the MDS encoding: native where the arrow type maps and no value is null (from the
    parquet footers' statistics), JSON otherwise (nested fields, nulls: JSON keeps them as they are)."""
    schema: pa.Schema | None = None
    nullable: set[str] = set()
    for entry in source.manifest.shards:
        meta = source.metadata(entry)
        schema = schema or meta.schema.to_arrow_schema()
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            for c in range(group.num_columns):
                column = group.column(c)
                stats = column.statistics
                if stats is None or not stats.has_null_count or stats.null_count:
                    nullable.add(column.path_in_schema.split(".")[0])
    if schema is None:
        return {}
    encodings = {}
    for f in schema:
        if f.name not in nullable and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            encodings[f.name] = "str"
        elif f.name not in nullable and pa.types.is_integer(f.type):
            encodings[f.name] = "int64"
        elif f.name not in nullable and pa.types.is_floating(f.type):
            encodings[f.name] = "float64"
        else:
            encodings[f.name] = "json"
    return encodings


def _encode(encoding: str, value: Any) -> bytes:
    if encoding == "str":
        return str(value).encode("utf-8")
    if encoding == "int64":
        return np.int64(value).tobytes()
    if encoding == "float64":
        return np.float64(value).tobytes()
    return json.dumps(value).encode("utf-8")


class _StreamWriter:
    """One MDS stream (a directory with index.json and shard.NNNNN.mds), as MDSWriter cuts it."""

    def __init__(self, directory: Path, encodings: dict[str, str], size_limit: int) -> None:
        self.directory = directory
        directory.mkdir(parents=True)
        self.names = sorted(encodings)
        self.encodings = [encodings[n] for n in self.names]
        self.sizes: list[int | None] = [8 if e in ("int64", "float64") else None for e in self.encodings]
        self.config = {
            "column_encodings": self.encodings,
            "column_names": self.names,
            "column_sizes": self.sizes,
            "compression": None,
            "format": "mds",
            "hashes": [],
            "size_limit": size_limit,
            "version": _VERSION,
        }
        self.config_data = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self.size_limit = size_limit
        self.shards: list[dict[str, Any]] = []
        self.samples: list[bytes] = []
        self.pending = 8 + len(self.config_data)

    def write(self, row: dict[str, Any]) -> None:
        head, body = [], []
        for name, encoding, size in zip(self.names, self.encodings, self.sizes, strict=True):
            datum = _encode(encoding, row[name])
            if size is None:
                head.append(len(datum))
            body.append(datum)
        sample = np.array(head, np.uint32).tobytes() + b"".join(body)
        if self.samples and self.size_limit < self.pending + len(sample) + _BYTES_PER_SAMPLE:
            self._flush()
        if 8 + len(self.config_data) + len(sample) + _BYTES_PER_SAMPLE >= 1 << 32:
            raise InputError(f"a row of {len(sample)} bytes does not fit an MDS shard (uint32 offsets)")
        self.samples.append(sample)
        self.pending += len(sample) + _BYTES_PER_SAMPLE

    def _flush(self) -> None:
        count = np.uint32(len(self.samples))
        offsets = np.array([0, *map(len, self.samples)]).cumsum().astype(np.uint32)
        offsets += len(count.tobytes()) + len(offsets.tobytes()) + len(self.config_data)
        data = count.tobytes() + offsets.tobytes() + self.config_data + b"".join(self.samples)
        basename = f"shard.{len(self.shards):05}.mds"
        (self.directory / basename).write_bytes(data)
        self.shards.append(
            {
                "samples": len(self.samples),
                "raw_data": {"basename": basename, "bytes": len(data), "hashes": {}},
                "zip_data": None,
                **self.config,
            }
        )
        self.samples, self.pending = [], 8 + len(self.config_data)

    def finish(self) -> None:
        if self.samples:
            self._flush()
        index = {"version": _VERSION, "shards": self.shards}
        (self.directory / "index.json").write_text(json.dumps(index, sort_keys=True))


def export_mds(config: ExportConfig, source: ManifestSource, directory: Path) -> dict[str, Any]:
    encodings = column_encodings(source)
    writers: dict[int, _StreamWriter] = {}
    stats = GroupStats()
    for repeats, batch in source.batches():
        writer = writers.get(repeats)
        if writer is None:
            writer = writers[repeats] = _StreamWriter(
                directory / group_name(repeats), encodings, config.mds_shard_bytes
            )
        for row in batch.to_pylist():
            writer.write(row)
        stats.add(repeats, batch.num_rows, column_sum(batch, "n_tokens"))
    for writer in writers.values():
        writer.finish()
    groups = stats.groups()
    check_expanded_totals(source, groups)
    streams = streams_config(groups)
    (directory / "streams.json").write_bytes(dumps_json(streams))
    (directory / "streams.yaml").write_text(yaml.safe_dump(streams, sort_keys=False))
    loader = copy_loader_script(LOADER, directory)
    return write_record(
        directory,
        config,
        source,
        {"groups": [group_summary(g, n_tokens=g.tokens) for g in groups], "streams": "streams.json", "loader": loader},
    )


def streams_config(groups: list[Group]) -> dict[str, Any]:
    """The `streams` of a StreamingDataset (paths relative to the export directory): stream
    `repeat_r` holds each of its documents once and is read `repeat: r` times per epoch."""
    return {"streams": {g.name: {"local": g.name, "repeat": g.repeats} for g in groups}}

