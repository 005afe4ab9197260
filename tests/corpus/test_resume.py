"""Crash tests: a rewrite killed with SIGKILL at many points and rerun ends byte-identical to an
uninterrupted run, and never leaves a manifest before the end.

The job runs in a forked child (the parent already imported everything, so a child starts in
milliseconds); the child kills itself with SIGKILL at a chosen call, or the parent kills it at a
random moment.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import corpus.fsutil
import corpus.rewrite
import corpus.scores
import corpus.steps.select
import corpus.steps.write
import corpus.storage
from corpus.config import RewriteConfig
from corpus.rewrite import run_rewrite
from scoring.protocols import BuiltScorer
from tests.corpus.fakes import FakeEngine, FakeSpec
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl, write_parquet

_ctx = multiprocessing.get_context("fork")


def _kill_on_call(module: Any, name: str, n: int) -> None:
    original = getattr(module, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


class SlowEngine(FakeEngine):
    def score(self, texts, progress=None):  # type: ignore[no-untyped-def]
        time.sleep(0.004)
        return super().score(texts, progress)


def _child(config: RewriteConfig, kill_at: tuple[str, str, int] | None, slow: bool) -> None:
    if kill_at is not None:
        where, name, n = kill_at
        module = {
            "scores": corpus.scores,
            "rewrite": corpus.rewrite,
            "storage": corpus.storage,
            "select": corpus.steps.select,
            "write": corpus.steps.write,
            "os": os,
        }[where]
        _kill_on_call(module, name, n)
    run_rewrite(config, BuiltScorer(SlowEngine() if slow else FakeEngine()))
    os._exit(0)


def run_child(
    config: RewriteConfig,
    kill_at: tuple[str, str, int] | None = None,
    *,
    slow: bool = False,
    kill_after: float | None = None,
) -> int | None:
    proc = _ctx.Process(target=_child, args=(config, kill_at, slow))
    proc.start()
    if kill_after is not None:
        proc.join(kill_after)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    return proc.exitcode


@pytest.fixture
def corpus_inputs(tmp_path: Path) -> list[str]:
    d = tmp_path / "in"
    d.mkdir()
    return [
        str(write_jsonl(d / "a.jsonl", make_rows(122, prefix="a"), extra_lines=[b"{broken"])),
        str(write_jsonl(d / "b.jsonl.zst", make_rows(90, prefix="b"))),
        str(write_parquet(d / "c.parquet", make_rows(70, prefix="c"))),
    ]


def _config(inputs: list[str], out: Path) -> RewriteConfig:
    return RewriteConfig(inputs=inputs, output=str(out), chunk_docs=32, shard_rows=20)


@pytest.mark.slow
def test_sigkill_at_every_phase_then_resume_is_byte_identical(
    tmp_path: Path, corpus_inputs: list[str]
) -> None:
    run_rewrite(_config(corpus_inputs, tmp_path / "ref"), FakeSpec())
    reference = tree_bytes(tmp_path / "ref")
    out = tmp_path / "out"
    cfg = _config(corpus_inputs, out)
    kill_points = [
        ("scores", "score_chunk", 3),  # mid-scoring, between chunks
        ("os", "replace", 4),  # a chunk written to its temporary name, not yet renamed
        ("storage", "write_json", 3),  # after job.json and one marker: an input scored, its marker not written
        ("select", "save_array", 1),  # dedup candidates scattered, nothing else of the selection
        ("select", "write_kept", 2),  # a block's first selection file written, not its marker
        ("select", "write_plots", 1),  # every selection file written, plots and marker not
        ("write", "parquet_bytes", 3),  # two output shards written
        ("os", "replace", 2),  # an output shard in its temporary file
        ("rewrite", "write_manifest", 1),  # everything but the manifest
    ]
    for point in kill_points:
        code = run_child(cfg, point)
        assert code == -signal.SIGKILL, f"child was not killed at {point}"
        assert not (out / "manifest.json").exists(), f"manifest exists after a kill at {point}"
        if point[1] == "replace":  # the kill the test means: a temporary file left behind
            assert list(out.rglob(".*.tmp")), f"no temporary file after a kill at {point}"
    assert run_child(cfg) == 0
    assert not list(out.rglob(".*.tmp"))
    assert tree_bytes(out) == reference


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_byte_identical(
    tmp_path: Path, corpus_inputs: list[str]
) -> None:
    started = time.perf_counter()
    assert run_child(_config(corpus_inputs, tmp_path / "ref"), slow=True) == 0
    duration = time.perf_counter() - started
    out = tmp_path / "out"
    cfg = _config(corpus_inputs, out)
    rng = random.Random(1234)
    kills = 0
    for _ in range(6):
        code = run_child(cfg, slow=True, kill_after=rng.uniform(0.05, 0.5) * duration)
        kills += code == -signal.SIGKILL
        if (out / "manifest.json").exists():
            break
    assert kills >= 2
    assert run_child(cfg, slow=True) == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")
