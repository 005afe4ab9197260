"""`--engine ray` against `--engine local`: same bytes; an actor killed mid-job; a driver that dies.

Every Ray run here must leave a directory byte-identical to the local run's (job.json, score files and
markers, output shards, report, plots, manifest): nothing in a job directory names its engine.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from corpus.ray_engine import RayOptions, RayRewrite, ray_job_executor, require_ray
from corpus.rewrite import RewriteConfig, RewriteProgress, run_rewrite
from scoring import EngineConfig, ScoringEngine
from scoring.errors import ConfigError
from service.cli import main
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl, write_parquet

# Thread count decides the last bits of CPU scores, so both engines run one thread.
ENGINE = EngineConfig(dtype="float32", device="cpu", num_threads=1, token_budget=2048)
CHUNK_DOCS = 16


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("ray_inputs")
    a = write_jsonl(d / "a.jsonl", make_rows(45, prefix="a"), extra_lines=[b"not json", b'{"text": ""}'])
    b = write_jsonl(d / "b.jsonl.zst", make_rows(30, prefix="b"))
    c = write_parquet(d / "c.parquet", make_rows(20, prefix="c"))
    # Cut inside its only zstd frame: the reader fails (the shard is skipped, locally and on Ray).
    broken = write_jsonl(d / "broken.jsonl.zst", make_rows(40, prefix="x"))
    broken.write_bytes(broken.read_bytes()[:-7])
    return [str(a), str(b), str(broken), str(c)]


def job(inputs: list[str], out: Path) -> RewriteConfig:
    return RewriteConfig(
        inputs=inputs, output=str(out), chunk_docs=CHUNK_DOCS, shard_rows=20, on_error="skip"
    )


@pytest.fixture(scope="module")
def local_tree(
    tmp_path_factory: pytest.TempPathFactory, tiny_pair: tuple[Path, Path], inputs: list[str]
) -> dict[str, bytes]:
    threads = torch.get_num_threads()
    engine = ScoringEngine.from_pretrained(*tiny_pair, ENGINE)
    try:
        out = tmp_path_factory.mktemp("local") / "out"
        run_rewrite(job(inputs, out), engine)
    finally:
        torch.set_num_threads(threads)  # the engine set 1 for the whole process
    return tree_bytes(out)


def test_missing_ray_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'reweigh\[ray\]'"):
        require_ray()
    argv = [
        "rewrite",
        "--engine",
        "ray",
        "--teacher",
        "t",
        "--reference",
        "r",
        "--out",
        str(tmp_path),
        "in.jsonl",
    ]
    assert main(argv) == 2  # one clear line, before any model or input is touched
    assert "pip install 'reweigh[ray]'" in capsys.readouterr().err


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="actors=0"):
        RayOptions(actors=0)
    with pytest.raises(ConfigError, match=r"gpus_per_actor=1.*device='cpu'"):
        RayOptions(gpus_per_actor=1).check(EngineConfig(device="cpu"))


@pytest.mark.ray
@pytest.mark.timeout(600)  # a deadlock guard: these take ~1 min on a quiet 2-core machine
def test_cli_ray_engine_is_byte_identical_to_local(
    ray_local: Any,
    tiny_pair: tuple[Path, Path],
    inputs: list[str],
    local_tree: dict[str, bytes],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    teacher, reference = tiny_pair
    argv = [
        "rewrite",
        "--engine",
        "ray",
        "--actors",
        "2",
        "--teacher",
        str(teacher),
        "--reference",
        str(reference),
    ]
    argv += ["--dtype", "float32", "--device", "cpu", "--threads", "1", "--token-budget", "2048"]
    argv += [
        "--chunk-docs",
        str(CHUNK_DOCS),
        "--shard-rows",
        "20",
        "--on-error",
        "skip",
        "--out",
        str(out),
        *inputs,
    ]
    assert main(argv) == 0
    ray_tree = tree_bytes(out)
    assert any(name.endswith("_SKIPPED.json") for name in ray_tree)  # the broken input, as locally
    assert sorted(ray_tree) == sorted(local_tree)
    assert [name for name in local_tree if ray_tree[name] != local_tree[name]] == []


class _DiesOnFirstChunk:
    """Mixed into ScoreActor: the first chunk any actor receives kills its process (once per marker)."""

    marker: Path

    def score_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["kind"] == "docs" and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # no cleanup, no exception: what a segfault or the OOM killer looks like
        return super().score_row(row)  # type: ignore[misc]


@pytest.mark.ray
@pytest.mark.timeout(600)  # a deadlock guard: these take ~1 min on a quiet 2-core machine
def test_actor_killed_mid_job_is_restarted_and_output_unchanged(
    ray_local: Any,
    tiny_pair: tuple[Path, Path],
    inputs: list[str],
    local_tree: dict[str, bytes],
    tmp_path: Path,
) -> None:
    from corpus.ray_stages import ScoreActor

    marker = tmp_path / "died"
    # Built here (not at module level) so that Ray ships the class by value to its workers.
    dying = type("DyingScoreActor", (_DiesOnFirstChunk, ScoreActor), {"marker": marker})
    out = tmp_path / "out"
    rewrite = RayRewrite(
        *tiny_pair, ENGINE, RayOptions(actors=1, max_restarts=2, max_task_retries=2), actor_cls=dying
    )
    rewrite.run(job(inputs, out))
    assert marker.exists()  # an actor did die
    assert rewrite.stats.chunks_scored == 3 + 2 + 2  # every chunk once: the lost one was retried
    assert tree_bytes(out) == local_tree


class _DriverDied(BaseException):
    """Raised out of the driver's progress callback: the driver stops mid-pass without cleanup of state."""


@pytest.mark.ray
@pytest.mark.timeout(600)  # a deadlock guard: these take ~1 min on a quiet 2-core machine
def test_driver_dies_and_rerun_resumes(
    ray_local: Any,
    tiny_pair: tuple[Path, Path],
    inputs: list[str],
    local_tree: dict[str, bytes],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    first = RayRewrite(*tiny_pair, ENGINE, RayOptions(actors=1))

    def die_after_some_chunks(p: RewriteProgress) -> None:
        if first.stats.chunks_scored >= 2:
            raise _DriverDied

    with pytest.raises(_DriverDied):
        first.run(job(inputs, out), progress=die_after_some_chunks)
    assert not (out / "manifest.json").exists()
    written = first.stats.chunks_scored
    assert 2 <= written < 7

    second = RayRewrite(*tiny_pair, ENGINE, RayOptions(actors=1))
    result = second.run(job(inputs, out))
    assert not result.already_done
    assert second.stats.chunks_scored == 7 - written  # nothing on disk was scored again
    assert tree_bytes(out) == local_tree

    # The service's entry point (its JobExecutor), on the finished directory: nothing to do.
    execute = ray_job_executor(ENGINE, *tiny_pair)
    assert execute(job(inputs, out), None, lambda _p: None, threading.Event()).already_done


@pytest.mark.ray  # building the Ray executor checks that the extra is installed
def test_service_picks_the_ray_executor_when_an_address_is_set(tiny_pair, tmp_path):
    from service.jobs import job_executor, run_local
    from service.settings import Settings

    teacher, reference = tiny_pair
    local = Settings(teacher=str(teacher), reference=str(reference), data_roots=[str(tmp_path)])
    assert job_executor(local) is run_local
    on_ray = Settings(teacher=str(teacher), reference=str(reference), data_roots=[str(tmp_path)], ray_address="auto", ray_actors=2)
    assert job_executor(on_ray) is not run_local
