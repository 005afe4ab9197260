"""A local Ray instance (2 CPUs, no dashboard) shared by the tests of this folder, started once.

Two CPUs: the tests run 2 scorer actors (1 CPU each), then 2 plain tasks at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # Workers import the test fakes (scorer specs) from the repository.
    env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, runtime_env=env)
    try:
        yield ray
    finally:
        ray.shutdown()
