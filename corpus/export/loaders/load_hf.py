"""Read this reweigh export with HF `datasets`: one split per repeat count.

    import sys; sys.path.insert(0, EXPORT_DIR)
    from load_hf import epoch
    dataset = epoch(EXPORT_DIR, seed=0)      # a datasets.Dataset: every document exactly `repeats` times

Standard library plus `datasets` only: this runs in the trainer's environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from export_versions import check_version

DISTRIBUTION, MINIMUM, BELOW = "datasets", "5.0", "6"


def groups(root: str) -> list[tuple[str, int]]:
    """(split name, repeats per epoch) of the export."""
    with open(os.path.join(root, "export.json")) as fh:
        return [(g["name"], g["repeats"]) for g in json.load(fh)["groups"]]


def splits(root: str, **kwargs: Any) -> Any:
    """The `DatasetDict` of the export's splits (load_dataset reads the card's `configs`)."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    from datasets import load_dataset

    return load_dataset(root, **kwargs)


def epoch(root: str, seed: int | None = 0, **kwargs: Any) -> Any:
    """One epoch: split `repeat_r` concatenated r times, then shuffled with `seed` (None: in order)."""
    from datasets import concatenate_datasets

    loaded = splits(root, **kwargs)
    dataset = concatenate_datasets([loaded[name] for name, repeats in groups(root) for _ in range(repeats)])
    return dataset if seed is None else dataset.shuffle(seed=seed)


def interleaved(root: str, seed: int = 0, **kwargs: Any) -> Any:
    """The splits sampled by `interleave_datasets` with the export's probabilities: the epoch's
    proportions in expectation, not its exact multiset (use `epoch` for that)."""
    from datasets import interleave_datasets

    with open(os.path.join(root, "export.json")) as fh:
        probabilities = json.load(fh)["interleave_probabilities"]
    loaded = splits(root, **kwargs)
    parts = [loaded[name] for name, _ in groups(root)]
    return interleave_datasets(
        parts, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted"
    )
