"""HF `datasets`: parquet files, one split per repeat count, and a dataset card whose `configs` make
`load_dataset(EXPORT_DIR)` find them.

The exact epoch is `concatenate_datasets` of split `repeat_r` taken r times (load_hf.epoch); the
card also gives `interleave_datasets` probabilities (r x rows_r / documents_out), which sample the
same proportions but not the exact multiset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
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
from corpus.fsutil import PARQUET_OPTIONS

LOADER = "load_hf.py"
RAY_LOADER = "load_ray.py"  # Ray Data reads the same parquet splits
DATA_DIR = "data"


class _SplitWriter:
    """Parquet parts of one split, `shard_rows` rows each."""

    def __init__(self, directory: Path, shard_rows: int) -> None:
        self.directory, self.shard_rows = directory, shard_rows
        directory.mkdir(parents=True)
        self.parts = 0
        self.writer: pq.ParquetWriter | None = None
        self.rows_in_part = 0

    def write(self, batch: pa.RecordBatch) -> None:
        start = 0
        while start < batch.num_rows:
            if self.writer is None or self.rows_in_part == self.shard_rows:
                self.close()
                path = self.directory / f"part-{self.parts:05d}.parquet"
                self.writer = pq.ParquetWriter(path, batch.schema, **PARQUET_OPTIONS)
                self.parts, self.rows_in_part = self.parts + 1, 0
            take = min(batch.num_rows - start, self.shard_rows - self.rows_in_part)
            self.writer.write_batch(batch.slice(start, take))
            start, self.rows_in_part = start + take, self.rows_in_part + take

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def export_hf(config: ExportConfig, source: ManifestSource, directory: Path) -> dict[str, Any]:
    writers: dict[int, _SplitWriter] = {}
    stats = GroupStats()
    try:
        for repeats, batch in source.batches():
            if repeats not in writers:
                writers[repeats] = _SplitWriter(
                    directory / DATA_DIR / group_name(repeats), config.hf_shard_rows
                )
            writers[repeats].write(batch)
            stats.add(repeats, batch.num_rows, column_sum(batch, "n_tokens"))
    finally:
        for writer in writers.values():
            writer.close()
    groups = stats.groups()
    check_expanded_totals(source, groups)
    probabilities = interleave_probabilities(groups)
    (directory / "README.md").write_text(
        dataset_card(groups, probabilities, source.manifest.totals.documents_out)
    )
    loader = copy_loader_script(LOADER, directory)
    ray_loader = copy_loader_script(RAY_LOADER, directory)
    body = {
        "groups": [group_summary(g, n_tokens=g.tokens) for g in groups],
        "interleave_probabilities": probabilities,
        "loader": loader,
        "ray_loader": ray_loader,
    }
    return write_record(directory, config, source, body)


def interleave_probabilities(groups: list[Group]) -> list[float]:
    documents = sum(g.rows * g.repeats for g in groups)
    return [g.rows * g.repeats / documents for g in groups]


def dataset_card(groups: list[Group], probabilities: list[float], documents: int) -> str:
    configs = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": g.name, "path": f"{DATA_DIR}/{g.name}/*.parquet"} for g in groups],
            }
        ]
    }
    rows = "\n".join(
        f"| `{g.name}` | {g.repeats} | {g.rows} | {p:.6f} |"
        for g, p in zip(groups, probabilities, strict=True)
    )
    return f"""---
{yaml.safe_dump(configs, sort_keys=False)}---
# reweigh export

A corpus reweighted by reweigh (MiniPLM difference scores). Each split holds the documents that one
epoch reads a given number of times; one epoch is {documents} documents.

| split | repeats per epoch | documents | interleave probability |
|---|---|---|---|
{rows}

The exact epoch (every document exactly `repeats` times), as `load_hf.epoch` builds it:

```python
from datasets import concatenate_datasets, load_dataset
splits = load_dataset(EXPORT_DIR)
epoch = concatenate_datasets([splits[name] for name, repeats in {[(g.name, g.repeats) for g in groups]!r} for _ in range(repeats)])
epoch = epoch.shuffle(seed=0)
```

Sampled instead (the same proportions in expectation, not the exact multiset):
`interleave_datasets([splits[n] for n in {[g.name for g in groups]!r}], probabilities={probabilities!r}, seed=0, stopping_strategy="all_exhausted")`.
"""
