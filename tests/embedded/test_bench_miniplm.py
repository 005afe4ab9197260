"""bench/miniplm.py --quick runs end to end offline and writes its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "miniplm.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "miniplm.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # a few minutes on a loaded 2-core machine
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    for label in (
        "(a) uniform",
        "(b) top-50% difference",
        "(c) top-50% lowest ref. ppl",
        "(d) soft weighting (τ=",
        "(e) top-50% lowest teacher ppl",
        "(b') top-50% difference, per source",
    ):
        assert label in table
    assert "kept: random_chars" in table
    assert "Unigram entropy of the held-out text" in table and "Compute-matched:" in table
    assert "| tokens (a) needs for (b)'s loss |" in table
