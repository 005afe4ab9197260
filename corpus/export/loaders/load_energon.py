"""Read this reweigh export with Megatron-Energon: one WebDataset per repeat count, blended by
`metadataset.yaml` (`blend_epochized`, `repetitions: r`).

    import sys; sys.path.insert(0, EXPORT_DIR)
    from load_energon import epoch_texts, prepare, train_dataset
    prepare(EXPORT_DIR)                      # once: Energon's own index of every dataset
    dataset = train_dataset(EXPORT_DIR, batch_size=8, shuffle_buffer_size=100, max_samples_per_sequence=100)

Standard library plus `megatron-energon` only: this runs in the trainer's environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from export_versions import check_version

DISTRIBUTION, MINIMUM, BELOW = "megatron-energon", "7.4", "8"
METADATASET = "metadataset.yaml"


def groups(root: str) -> list[tuple[str, int]]:
    """(dataset directory, repeats per epoch) of the export."""
    with open(os.path.join(root, "export.json")) as fh:
        return [(g["name"], g["repeats"]) for g in json.load(fh)["groups"]]


def prepare(root: str, workers: int = 1) -> None:
    """Index every dataset of the export with Energon's `prepare_dataset` (what `energon prepare`
    runs), all of it in split `train`; a dataset already indexed is left as it is."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    from megatron.energon.flavors import BaseWebdatasetFactory

    for name, _ in groups(root):
        path = Path(root) / name
        if (path / ".nv-meta" / "split.yaml").is_file():
            continue
        tars = sorted(p.name for p in path.glob("*.tar"))
        BaseWebdatasetFactory.prepare_dataset(
            path, tars, split_parts_ratio=[("train", 1.0)], shuffle_seed=None, workers=workers
        )


def train_dataset(root: str, rank: int = 0, world_size: int = 1, num_workers: int = 0, **kwargs: Any) -> Any:
    """`get_train_dataset` of the export's metadataset, one epoch (`repeat=False`): each document
    exactly `repeats` times. kwargs: batch_size, shuffle_buffer_size, max_samples_per_sequence, ..."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    from megatron.energon import WorkerConfig, get_train_dataset

    worker_config = WorkerConfig(rank=rank, world_size=world_size, num_workers=num_workers)
    return get_train_dataset(os.path.join(root, METADATASET), worker_config=worker_config, repeat=False, **kwargs)


def epoch_texts(root: str, **kwargs: Any) -> list[str]:
    """The texts of one epoch, in the order the loader yields them (batches of one, no shuffling
    unless kwargs ask for it)."""
    from megatron.energon import get_loader

    options = {"batch_size": 1, "shuffle_buffer_size": None, "max_samples_per_sequence": None, **kwargs}
    texts: list[str] = []
    for batch in get_loader(train_dataset(root, **options)):
        texts.extend(batch.text)
    return texts
