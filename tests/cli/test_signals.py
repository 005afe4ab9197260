"""SIGTERM and Ctrl-C stop `reweigh score` and `reweigh rewrite` cleanly: no `.NAME.PID.tmp` is left
next to the outputs, and the exit code says which signal (128 + its number)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus.helpers import make_rows, write_jsonl
from tests.service.live import REPO

pytestmark = pytest.mark.slow  # a process each (~5 s of imports)


def run_signalled(sig: signal.Signals, nth_write: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.cli.signalled", sig.name, str(nth_write), "--", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))


def engine_args(tiny_pair: tuple[Path, Path]) -> list[str]:
    teacher, reference = tiny_pair
    return ["--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32", "--threads", "1"]


def test_score_stopped_by_sigterm_while_writing_leaves_no_temporary(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", make_rows(40))
    out = tmp_path / "out" / "scores.parquet"
    argv = ["score", *engine_args(tiny_pair), "--chunk-docs", "10", "-o", str(out), str(data)]
    proc = run_signalled(signal.SIGTERM, 2, argv)  # the second chunk file in the scratch directory
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "reweigh score: terminated"
    assert leftovers(tmp_path) == []
    assert list(out.parent.iterdir()) == []  # neither the output nor the scratch directory beside it


# Ctrl-C (SIGINT) already unwound through `finally` as KeyboardInterrupt; SIGTERM killed the process
# where it stood. Resuming after either is covered by tests/corpus/test_resume.py.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_rewrite_stopped_while_writing_leaves_no_temporary(
    sig: signal.Signals, tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", make_rows(40))
    out = tmp_path / "out"
    argv = ["rewrite", *engine_args(tiny_pair), "--chunk-docs", "10", "--out", str(out), str(data)]
    proc = run_signalled(sig, 2, argv)  # the second chunk's scores: written, not yet renamed
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == []
    assert (out / "scores").is_dir() and not (out / "manifest.json").exists()
