"""The code a trainer runs to read each export, exactly as the README shows it. The tests run it
with `python -c` (in reweigh's environment or in a loader's own), with EXPORT_DIR set, and read what
it prints: the ids one epoch yields."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

MDS = """
import os, sys
EXPORT_DIR = os.environ["EXPORT_DIR"]
sys.path.insert(0, EXPORT_DIR)
from load_mds import streaming_dataset

dataset = streaming_dataset(EXPORT_DIR, shuffle=True, shuffle_seed=0, batch_size=8)
print([sample["id"] for sample in dataset])
"""

HF = """
import os, sys
EXPORT_DIR = os.environ["EXPORT_DIR"]
sys.path.insert(0, EXPORT_DIR)
from load_hf import epoch

dataset = epoch(EXPORT_DIR, seed=0)  # every document exactly `repeats` times, shuffled
print([sample["id"] for sample in dataset])
"""

RAY = """
import os, sys
EXPORT_DIR = os.environ["EXPORT_DIR"]
sys.path.insert(0, EXPORT_DIR)
from load_ray import epoch

dataset = epoch(EXPORT_DIR, shuffle_seed=0)  # a ray.data.Dataset of the HF export's splits, repeats expanded
print([row["id"] for row in dataset.iter_rows()])
"""

MEGATRON = """
import os, sys
EXPORT_DIR = os.environ["EXPORT_DIR"]
sys.path.insert(0, EXPORT_DIR)
from load_megatron import indexed_datasets, blend

prefixes, weights = blend(EXPORT_DIR)  # Megatron's (prefixes, weights): --data-path w1 p1 w2 p2 ...
for name, dataset in indexed_datasets(EXPORT_DIR).items():
    print(name, [dataset[i].tolist() for i in range(len(dataset))])
"""

ENERGON = """
import json, os, sys
EXPORT_DIR = os.environ["EXPORT_DIR"]
sys.path.insert(0, EXPORT_DIR)
from load_energon import epoch_texts, prepare

prepare(EXPORT_DIR)  # once: Energon's own index of each dataset (what `energon prepare` writes)
print(json.dumps(epoch_texts(EXPORT_DIR)))  # one epoch of metadataset.yaml: blend_epochized, repetitions r
"""


def run_snippet(python: str | Path, snippet: str, export_dir: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(python), "-c", snippet],
        env={**os.environ, **(env or {}), "EXPORT_DIR": str(export_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"snippet failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def ids_seen(stdout: str) -> Counter[str]:
    """The ids in the last printed list of str. A loader's library may print to the same stdout after
    it (Ray's raylet warns about worker counts there), so its lines are skipped, never parsed."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("[") and line.endswith("]"):
            return Counter(json.loads(line.replace("'", '"')))
    raise AssertionError(f"the snippet printed no list of ids:\n{stdout[-4000:]}")


def texts_seen(stdout: str) -> Counter[str]:
    """The texts in the last printed JSON list (TextSample carries the text, not the id)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("[") and line.endswith("]"):
            return Counter(json.loads(line))
    raise AssertionError(f"the snippet printed no list of texts:\n{stdout[-4000:]}")
