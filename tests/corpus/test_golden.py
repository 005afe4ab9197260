"""The rewrite job still writes the recorded bytes (tests/corpus/golden.py), on the local executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus.rewrite import run_rewrite
from tests.corpus.fakes import FakeSpec
from tests.corpus.golden import CASES, assert_matches, case_config, snapshot


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_the_record(tmp_path: Path, name: str) -> None:
    input_dir, out = tmp_path / "in", tmp_path / "out"
    run_rewrite(case_config(name, input_dir, out), FakeSpec())
    assert_matches(name, snapshot(out, input_dir))
