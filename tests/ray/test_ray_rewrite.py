"""The Ray executor against the local one: the recorded bytes, a worker or the driver killed mid-job,
a driver that never opens an input or output shard, and the CLI and service wiring.

Every Ray run here must end with the bytes of the recorded local run (tests/corpus/golden.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from corpus.config import RayOptions, RewriteConfig
from corpus.rewrite import run_rewrite
from scoring import EngineConfig
from scoring.config import PairSpec
from scoring.errors import ConfigError
from service.cli import main
from tests.corpus.fakes import FakeEngine, FakeSpec
from tests.corpus.golden import assert_matches, case_config, snapshot
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl, write_parquet

REPO = Path(__file__).resolve().parents[2]


def ray_executor(**options: Any) -> Any:
    from corpus.executor.ray import RayExecutor

    return RayExecutor(RayOptions(actors=2, workers=2, **options))


def test_missing_ray_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import importlib.util

    from corpus.executor.ray import require_ray

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'reweigh\[ray\]'"):
        require_ray()
    argv = ["rewrite", "--executor", "ray", "--teacher", "t", "--reference", "r", "--out", str(tmp_path), "in.jsonl"]
    assert main(argv) == 2  # one clear line, before any model or input is touched
    assert "pip install 'reweigh[ray]'" in capsys.readouterr().err


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="actors"):
        RayOptions(actors=0)
    with pytest.raises(ConfigError, match=r"gpus_per_actor=1.*device='cpu'"):
        RayOptions(gpus_per_actor=1).check(EngineConfig(device="cpu"))
    with pytest.raises(ConfigError, match=r"address='nowhere'"):
        RayOptions(address="nowhere")


@pytest.mark.ray
@pytest.mark.timeout(600)
# The other recorded cases run on Ray in the kill tests below (keep_tokens, soft_documents).
@pytest.mark.parametrize("name", ["top_fraction_guards", "soft_tokens", "stratified"])
def test_recorded_cases_match_on_ray(ray_local: Any, tmp_path: Path, name: str) -> None:
    input_dir, out = tmp_path / "in", tmp_path / "out"
    executor = ray_executor()
    try:
        run_rewrite(case_config(name, input_dir, out), FakeSpec(), executor=executor)
    finally:
        executor.close()
    assert_matches(name, snapshot(out, input_dir))


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_driver_never_opens_an_input_or_output_shard(
    ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open of a file in this process is audited; parquet and document reads are patched to
    record their paths. Workers are other processes, so only the driver's opens are seen."""
    import pyarrow.parquet as pq

    import corpus.readers

    input_dir, out = tmp_path / "in", tmp_path / "out"
    config = case_config("top_fraction_guards", input_dir, out)
    opened: list[str] = []
    recording = [True]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if recording[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    def spy(fn: Any) -> Any:
        def wrapper(path: Any, *a: Any, **kw: Any) -> Any:
            opened.append(str(path))
            return fn(path, *a, **kw)

        return wrapper

    for module, name in ((pq, "read_table"), (pq, "write_table"), (pq, "ParquetFile"), (corpus.readers, "read_documents")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    sys.addaudithook(audit)  # cannot be removed: `recording` turns it off
    # The instrument works: the same job run here opens inputs and shards.
    run_rewrite(case_config("top_fraction_guards", input_dir, tmp_path / "local"), FakeSpec())
    assert [p for p in opened if p.startswith(str(input_dir))] and [p for p in opened if "/shards/" in p]
    opened.clear()
    executor = ray_executor()
    try:
        run_rewrite(config, FakeSpec(), executor=executor)
    finally:
        recording[0] = False
        executor.close()
    touched = [p for p in opened if p.startswith(str(input_dir)) or "/shards/" in p]
    assert touched == []
    assert_matches("top_fraction_guards", snapshot(out, input_dir))


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_confinement_travels_to_the_workers(ray_local: Any, tmp_path: Path) -> None:
    """The service runs each job inside `confined_to(roots)`, a context variable of its thread that
    Ray workers never see: the executor carries the roots to them. A confined job runs on Ray as it
    does unconfined, and an input swapped for a symlink leaving the root is refused on the worker
    (the driver never opens an input) with the local executor's error."""
    from corpus.confine import confined_to
    from scoring.errors import PathNotAllowedError

    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    executor = ray_executor()
    try:
        with confined_to([root]):
            run_rewrite(case_config("top_fraction_guards", root / "in", root / "out"), FakeSpec(), executor=executor)
        assert_matches("top_fraction_guards", snapshot(root / "out", root / "in"))

        (root / "in" / "c.parquet").rename(outside / "c.parquet")  # the same bytes, now outside
        (root / "in" / "c.parquet").symlink_to(outside / "c.parquet")
        errors = []
        for name, on in (("local", None), ("ray", executor)):
            config = case_config("top_fraction_guards", root / "in", root / name)
            with confined_to([root]), pytest.raises(PathNotAllowedError, match="leads outside the data roots") as exc:
                run_rewrite(config, FakeSpec(), executor=on)
            errors.append(str(exc.value))
            assert not (root / name / "manifest.json").exists()
    finally:
        executor.close()
    assert errors[0] == errors[1] and "c.parquet" in errors[0]


class _DiesOnce(FakeEngine):
    """A scorer whose first call, in any process, kills that process: a segfault or the OOM killer."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def score(self, texts: Any, progress: Any = None) -> Any:
        if not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # no cleanup, no exception
        return super().score(texts, progress)


@dataclass(frozen=True)
class DiesOnceSpec:
    marker: Path

    def build(self) -> FakeEngine:
        return _DiesOnce(self.marker)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_worker_killed_mid_job_is_restarted_and_output_unchanged(ray_local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    input_dir, out = tmp_path / "in", tmp_path / "out"
    executor = ray_executor(max_restarts=2, max_task_retries=2)
    try:
        run_rewrite(case_config("soft_documents", input_dir, out), DiesOnceSpec(marker), executor=executor)
    finally:
        executor.close()
    assert marker.exists()  # a worker did die
    assert_matches("soft_documents", snapshot(out, input_dir))


_DRIVER = """
import sys, time
from pathlib import Path
import ray
from corpus.config import RayOptions
from corpus.executor.ray import RayExecutor
from corpus.rewrite import run_rewrite
from tests.corpus.golden import case_config
from tests.ray.test_ray_rewrite import SlowSpec
ray.init(address=sys.argv[1])
config = case_config("keep_tokens", Path(sys.argv[2]), Path(sys.argv[3]))
run_rewrite(config, SlowSpec(), executor=RayExecutor(RayOptions(actors=2)))
"""


class _Slow(FakeEngine):
    def score(self, texts: Any, progress: Any = None) -> Any:
        time.sleep(0.5)
        return super().score(texts, progress)


@dataclass(frozen=True)
class SlowSpec:
    def build(self) -> FakeEngine:
        return _Slow()


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_driver_sigkilled_mid_job_then_rerun_is_byte_identical(ray_local: Any, tmp_path: Path) -> None:
    input_dir, out = tmp_path / "in", tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, address, str(input_dir), str(out)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("scores/*/chunk-*.parquet"))) < 2:
            assert driver.poll() is None, "the driver ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert not (out / "manifest.json").exists()
    executor = ray_executor()
    try:
        # A spec with the same fingerprint: the rerun is the same job, resumed.
        result = run_rewrite(case_config("keep_tokens", input_dir, out), FakeSpec(), executor=executor)
    finally:
        executor.close()
    assert not result.already_done
    assert_matches("keep_tokens", snapshot(out, input_dir))


# ------------------------------------------------------------------------------ a real model pair

ENGINE = EngineConfig(dtype="float32", device="cpu", num_threads=1, token_budget=2048)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("ray_inputs")
    a = write_jsonl(d / "a.jsonl", make_rows(45, prefix="a"), extra_lines=[b"not json", b'{"text": ""}'])
    b = write_jsonl(d / "b.jsonl.zst", make_rows(30, prefix="b"))
    c = write_parquet(d / "c.parquet", make_rows(20, prefix="c"))
    broken = write_jsonl(d / "broken.jsonl.zst", make_rows(40, prefix="x"))
    broken.write_bytes(broken.read_bytes()[:-7])
    return [str(a), str(b), str(broken), str(c)]


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_cli_ray_executor_is_byte_identical_to_local(
    ray_local: Any, tiny_pair: tuple[Path, Path], inputs: list[str], tmp_path: Path
) -> None:
    threads = torch.get_num_threads()
    local = tmp_path / "local"
    try:
        config = RewriteConfig(inputs=inputs, output=str(local), chunk_docs=16, shard_rows=20, on_error="skip")
        run_rewrite(config, PairSpec(str(tiny_pair[0]), str(tiny_pair[1]), ENGINE))
    finally:
        torch.set_num_threads(threads)  # the engine set 1 for the whole process
    out = tmp_path / "out"
    argv = ["rewrite", "--executor", "ray", "--ray-actors", "2", "--teacher", str(tiny_pair[0])]
    argv += ["--reference", str(tiny_pair[1]), "--dtype", "float32", "--device", "cpu", "--threads", "1"]
    argv += ["--token-budget", "2048", "--chunk-docs", "16", "--shard-rows", "20", "--on-error", "skip"]
    argv += ["--out", str(out), *inputs]
    assert main(argv) == 0
    assert tree_bytes(out) == tree_bytes(local)


@pytest.mark.ray  # building the Ray executor checks that the extra is installed
def test_service_picks_the_ray_executor_when_asked(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from service.jobs import job_executor, run_local
    from service.settings import Settings

    teacher, reference = (str(p) for p in tiny_pair)
    local = Settings(teacher=teacher, reference=reference, data_roots=[str(tmp_path)])
    assert job_executor(local) is run_local
    on_ray = Settings(
        teacher=teacher, reference=reference, data_roots=[str(tmp_path)], job_executor="ray", ray={"actors": 2}
    )
    assert job_executor(on_ray) is not run_local
    with pytest.raises(ConfigError, match="gpus_per_actor"):
        Settings(teacher=teacher, reference=reference, device="cpu", job_executor="ray", ray={"gpus_per_actor": 1})
