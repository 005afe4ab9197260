"""Megatron-Energon: one WebDataset per repeat count, blended by `blend_epochized` with `repetitions: r`.

Energon has no weight per sample (NVIDIA/Megatron-Energon#15), but an epochized blend repeats each
inner dataset exactly `repetitions` times per epoch: dataset `repeat_r` holds each of its documents
once, so one epoch of `metadataset.yaml` is the manifest's expanded multiset, with no sampling.

Written here: the tar shards (WebDataset: members `<key>.txt`, the text, and `<key>.json`, the whole
row), each dataset's `.nv-meta/dataset.yaml` (TextSample, `text` from `txt`) and the metadataset.
Energon's index (`.nv-meta/index.sqlite`, `split.yaml`, `.info.json`, one `.tar.idx` per shard) is an
internal format that changes between its versions, so it is not imitated: `load_energon.prepare`
builds it in the trainer's environment with Energon's own `prepare_dataset` (once; `energon
prepare` does the same). Tar members carry fixed owners and times, so an export is byte-identical
across runs.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml

from corpus.export.common import (
    ExportConfig,
    GroupStats,
    ManifestSource,
    check_expanded_totals,
    column_sum,
    copy_loader_script,
    group_name,
    group_summary,
    write_record,
)

LOADER = "load_energon.py"
METADATASET = "metadataset.yaml"
DATASET_YAML = {
    "sample_type": {"__module__": "megatron.energon", "__class__": "TextSample"},
    "field_map": {"text": "txt"},
}


class _TarWriter:
    """One WebDataset directory: shard-NNNNN.tar files of `shard_rows` samples each."""

    def __init__(self, directory: Path, shard_rows: int) -> None:
        self.directory, self.shard_rows = directory, shard_rows
        (directory / ".nv-meta").mkdir(parents=True)
        (directory / ".nv-meta" / "dataset.yaml").write_text(yaml.safe_dump(DATASET_YAML, sort_keys=False))
        self.shards = 0
        self.rows = 0  # in this dataset: the sample keys
        self.tar: tarfile.TarFile | None = None

    def write(self, text: str, row: dict[str, Any]) -> None:
        if self.tar is None or self.rows % self.shard_rows == 0:
            self.close()
            path = self.directory / f"shard-{self.shards:05d}.tar"
            self.tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed by close)
            self.shards += 1
        # The key is the row's position: ids may hold '.' or '/', which WebDataset keys cannot.
        key = f"{self.rows:010d}"
        _add(self.tar, f"{key}.txt", text.encode("utf-8"))
        _add(self.tar, f"{key}.json", json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        self.rows += 1

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed: the same rows give the same bytes
    tar.addfile(info, io.BytesIO(data))


def export_energon(config: ExportConfig, source: ManifestSource, directory: Path) -> dict[str, Any]:
    text_field = source.manifest.fingerprint.get("text_field", "text")
    writers: dict[int, _TarWriter] = {}
    stats = GroupStats()
    try:
        for repeats, batch in source.batches():
            if repeats not in writers:
                writers[repeats] = _TarWriter(directory / group_name(repeats), config.energon_shard_rows)
            for row in batch.to_pylist():
                writers[repeats].write(row[text_field] or "", row)
            stats.add(repeats, batch.num_rows, column_sum(batch, "n_tokens"))
    finally:
        for writer in writers.values():
            writer.close()
    groups = stats.groups()
    check_expanded_totals(source, groups)
    metadataset = {
        "__module__": "megatron.energon",
        "__class__": "MetadatasetV2",
        "splits": {
            "train": {"blend_epochized": [{"repetitions": g.repeats, "path": f"./{g.name}"} for g in groups]}
        },
    }
    (directory / METADATASET).write_text(yaml.safe_dump(metadataset, sort_keys=False))
    loader = copy_loader_script(LOADER, directory)
    body = {
        "groups": [group_summary(g, n_tokens=g.tokens, shards=writers[g.repeats].shards) for g in groups],
        "metadataset": METADATASET,
        "loader": loader,
    }
    return write_record(directory, config, source, body)
