"""The Ray executor with inputs and output in an object store (moto's S3 server): workers read and
write the bucket themselves, and the output is the bytes of the same job on the local executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corpus.config import RayOptions
from corpus.executor.ray import RayExecutor
from corpus.rewrite import run_rewrite
from tests.corpus.fakes import FakeSpec
from tests.corpus.golden import case_config
from tests.corpus.s3 import bucket, remote_tree, upload_dir

__all__ = ["bucket"]  # a fixture, imported for pytest


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_ray_job_on_a_bucket_matches_the_local_executor(ray_local: Any, tmp_path: Path, bucket: str) -> None:
    config = case_config("keep_tokens", tmp_path / "in", tmp_path / "unused")
    upload_dir(tmp_path / "in", f"s3://{bucket}/in")
    names = [Path(p).name for p in config.inputs]

    def job(out: str) -> Any:
        return config.model_copy(
            update={"inputs": [f"s3://{bucket}/in/{n}" for n in names], "output": f"s3://{bucket}/{out}"}
        )

    run_rewrite(job("local"), FakeSpec())
    executor = RayExecutor(RayOptions(actors=2, workers=2))
    try:
        run_rewrite(job("ray"), FakeSpec(), executor=executor)
    finally:
        executor.close()
    local, ray = remote_tree(f"s3://{bucket}/local"), remote_tree(f"s3://{bucket}/ray")
    assert "manifest.json" in ray and ray == local
