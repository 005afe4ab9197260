"""Virtual environments as a trainer would have them: one per loader library, beside (never inside)
reweigh's, created once with pip and cached under ~/.cache/reweigh-test-envs/<library>-<version>
(REWEIGH_TEST_ENVS moves it). A library whose environment cannot be built here skips its tests with
the reason (pip's last lines), so a skip is never silent."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("REWEIGH_TEST_ENVS", "~/.cache/reweigh-test-envs")).expanduser()
# CPU torch for the libraries that need it: on this project's machines `torch==2.13.0` resolves to the
# CPU wheel (as in scripts/setup.sh); a bare `torch` would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"
STUB = Path(__file__).parent / "torchvision_stub"
# distribution -> (version verified, extra requirements, packages swapped in afterwards): the README
# names these versions. mosaicml-streaming imports torchvision at top level, and PyPI's torchvision is
# a CUDA build that cannot load beside CPU torch; its text path never calls torchvision, so here a
# stand-in takes its place (a trainer's GPU environment has the real one).
LIBRARIES: dict[str, tuple[str, list[str], list[str]]] = {
    "mosaicml-streaming": ("0.13.0", [TORCH], [str(STUB)]),
    "megatron-core": ("0.16.1", [TORCH], []),  # the newest for Python 3.11 (0.17+ need 3.12)
    "datasets": ("5.2.0", [], []),
    "ray": ("2.60.0", ["ray[data]==2.60.0"], []),
    "megatron-energon": ("7.4.1", [TORCH], []),
}
READY = ".reweigh-ready"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two pytest processes build an environment once
        yield


def loader_python(distribution: str) -> Path:
    """The python of `distribution`'s environment, built on first use."""
    version, extra, swaps = LIBRARIES[distribution]
    env = ROOT / f"{distribution}-{version}"
    python = env / "bin" / "python"
    with _locked(ROOT / f".{distribution}-{version}.lock"):
        if not (env / READY).is_file():
            log = ROOT / f"{distribution}-{version}.log"
            subprocess.run(["rm", "-rf", str(env)], check=True)
            steps = [
                [sys.executable, "-m", "venv", str(env)],
                [str(python), "-m", "pip", "install", "-q", *extra, f"{distribution}=={version}"],
            ]
            if swaps:
                steps.append(
                    [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", *swaps]
                )
            with log.open("w") as out:
                for step in steps:
                    done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
                    if done.returncode != 0:
                        tail = log.read_text().strip().splitlines()[-5:]
                        pytest.skip(f"cannot build the {distribution}=={version} environment ({log}): {tail}")
            (env / READY).write_text(f"{distribution}=={version}\n")
    return python
