"""A local Ray instance (2 CPUs, no dashboard) shared by the tests of this folder, started once.

Two CPUs: the tests run 2 scorer actors (1 CPU each), then 2 plain tasks at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.corpus.s3 import ENV, MotoServer, s3_server

__all__ = ["s3_server"]  # a fixture, imported for pytest


@pytest.fixture(scope="session")
def ray_local(s3_server: MotoServer) -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # Workers import the test fakes (scorer specs) from the repository, and reach the S3 server
    # with the credentials and endpoint in their environment, as on a cluster without a shared disk.
    s3 = {**ENV, "AWS_ENDPOINT_URL": s3_server.url}
    env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), **s3}}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, runtime_env=env)
    try:
        yield ray
    finally:
        ray.shutdown()
