"""`reweigh demo --no-serve` end to end on the tiny random-weight pair (the real assets are patched out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import embedded
from embedded.corpus import subset_files
from service.cli import main


@pytest.mark.slow
def test_demo_batch_part_runs_and_a_rerun_is_instant(
    tmp_path: Path,
    tiny_pair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    teacher_dir, reference_dir = tiny_pair
    scored, ref = subset_files()
    monkeypatch.setenv("REWEIGH_HOME", str(tmp_path))
    monkeypatch.setattr(
        embedded,
        "ensure_demo_assets",
        lambda full_corpus=False: embedded.DemoAssets(teacher_dir, reference_dir, scored, ref),
    )
    assert main(["demo", "--docs", "10", "--no-serve", "--threads", "1"]) == 0
    out = tmp_path / "demo" / "rewrite-demo-10-top50"
    report = json.loads((out / "report.json").read_text())
    assert report["documents"]["in"] == 10 and report["documents"]["kept"] == 5
    assert (out / "manifest.json").is_file()
    assert "Kept per group (teacher vs reference within it):" in capsys.readouterr().out
    assert set(report["diagnostics"]["groups"]) <= {"python-docs", "kjv-bible", "shakespeare"}

    manifest = (out / "manifest.json").read_bytes()
    assert main(["demo", "--docs", "10", "--no-serve", "--threads", "1"]) == 0
    assert (out / "manifest.json").read_bytes() == manifest
