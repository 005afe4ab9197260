"""Read this reweigh export with mosaicml-streaming: one Stream per repeat count.

    import sys; sys.path.insert(0, EXPORT_DIR)
    from load_mds import streaming_dataset
    dataset = streaming_dataset(EXPORT_DIR, shuffle=True, shuffle_seed=0, batch_size=8)

One epoch yields every document of the manifest exactly `repeats` times: stream `repeat_r` holds its
documents once and has `repeat: r` (streams.json / streams.yaml list the same streams to paste into
a config). Standard library plus mosaicml-streaming only: this runs in the trainer's environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from export_versions import check_version

DISTRIBUTION, MINIMUM, BELOW = "mosaicml-streaming", "0.13", "0.14"


def streams(root: str) -> list[Any]:
    from streaming import Stream

    with open(os.path.join(root, "streams.json")) as fh:
        config = json.load(fh)["streams"]
    return [Stream(local=os.path.join(root, s["local"]), repeat=s["repeat"]) for s in config.values()]


def streaming_dataset(root: str, **kwargs: Any) -> Any:
    """A `StreamingDataset` over the export; `kwargs` go to it (shuffle, batch_size, ...)."""
    check_version(DISTRIBUTION, MINIMUM, BELOW)
    from streaming import StreamingDataset

    return StreamingDataset(streams=streams(root), **kwargs)
