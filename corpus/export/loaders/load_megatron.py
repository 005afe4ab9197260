"""Read this reweigh export with Megatron-Core: one indexed dataset (`.bin`/`.idx`) per repeat count
and the blend that weighs them.

    import sys; sys.path.insert(0, EXPORT_DIR)
    from load_megatron import blend, indexed_datasets
    prefixes, weights = blend(EXPORT_DIR)   # BlendedMegatronDatasetConfig(blend=(prefixes, weights), ...)

or on Megatron-LM's command line, the line in data_path.txt: `--data-path w1 p1 w2 p2 ...`.
Megatron draws *samples* (sequence-length token windows) from each prefix in proportion to its
weight, so weight = repeats x tokens (EOS included): each prefix's tokens are read `repeats` times
per pass over the blend's tokens. Standard library plus megatron-core only: this runs in the
trainer's environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from export_versions import check_version

DISTRIBUTION, MINIMUM, BELOW = "megatron-core", "0.16", "0.20"


def blend(root: str) -> tuple[list[str], list[float]]:
    """(absolute prefixes, weights): a BlendedMegatronDatasetConfig `blend`."""
    with open(os.path.join(root, "blend.json")) as fh:
        config = json.load(fh)
    return [os.path.join(os.path.abspath(root), p) for p in config["prefixes"]], [
        float(w) for w in config["weights"]
    ]


def indexed_datasets(root: str) -> dict[str, Any]:
    """Prefix name -> Megatron-Core `IndexedDataset` (item i: document i's token ids, EOS last)."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefixes, _ = blend(root)
    return {os.path.basename(p): IndexedDataset(p) for p in prefixes}


def blended_sample_counts(root: str, num_samples: int) -> list[int]:
    """How many of `num_samples` samples Megatron's BlendedDataset draws from each prefix: its own
    blending helper (`build_blending_indices`) on this blend's normalised weights."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    import numpy
    from megatron.core.datasets.utils import normalize

    try:
        from megatron.core.datasets import helpers
    except ImportError:  # a source checkout: the C++ helpers are compiled on first use
        from megatron.core.datasets.utils import compile_helpers

        compile_helpers()
        from megatron.core.datasets import helpers
    prefixes, weights = blend(root)
    dataset_index = numpy.zeros(num_samples, dtype=numpy.int16)
    dataset_sample_index = numpy.zeros(num_samples, dtype=numpy.int64)
    helpers.build_blending_indices(
        dataset_index, dataset_sample_index, normalize(weights), len(prefixes), num_samples, False
    )
    return numpy.bincount(dataset_index, minlength=len(prefixes)).tolist()
