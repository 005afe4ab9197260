"""Read this reweigh HF export with Ray Data: each split's parquet read once and unioned `repeats` times.

    import sys; sys.path.insert(0, EXPORT_DIR)
    from load_ray import epoch
    dataset = epoch(EXPORT_DIR)       # a ray.data.Dataset: every document exactly `repeats` times

Standard library plus Ray only: this runs in the trainer's environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from export_versions import check_version

DISTRIBUTION, MINIMUM, BELOW = "ray", "2.60", "2.61"


def epoch(root: str, shuffle_seed: int | None = 0) -> Any:
    """One epoch: split `repeat_r` unioned r times, then `random_shuffle(seed=shuffle_seed)` (None: unshuffled)."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    import ray.data

    with open(os.path.join(root, "export.json")) as fh:
        groups = [(g["name"], g["repeats"]) for g in json.load(fh)["groups"]]
    parts = []
    for name, repeats in groups:
        split = ray.data.read_parquet(os.path.join(root, "data", name))
        parts += [split] * repeats
    dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return dataset if shuffle_seed is None else dataset.random_shuffle(seed=shuffle_seed)
