"""The rewrite job and `reweigh rewrite` with the real engine on tiny random-weight models."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpus.config import RewriteConfig
from corpus.manifest import load_manifest
from corpus.rewrite import run_rewrite
from scoring import EngineConfig, ScoringEngine
from scoring.protocols import BuiltScorer
from service.cli import main
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_pair: tuple[Path, Path]) -> ScoringEngine:
    teacher, reference = tiny_pair
    return ScoringEngine.from_pretrained(
        teacher,
        reference,
        EngineConfig(dtype="float32", device="cpu", max_length=64, token_budget=1024, num_threads=1),
    )


def test_rewrite_with_real_engine_matches_direct_scores(tmp_path: Path, engine: ScoringEngine) -> None:
    rows = make_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = RewriteConfig(inputs=[str(path)], output=str(tmp_path / "out"), chunk_docs=16, shard_rows=8)
    result = run_rewrite(cfg, BuiltScorer(engine))
    m = result.manifest
    assert m.fingerprint["engine"]["digest"] == engine.fingerprint.digest
    assert m.totals.rows_out == 20
    out = [r for s in m.shards for r in pq.read_table(tmp_path / "out" / s.path).to_pylist()]
    direct = {r["text"]: s for r, s in zip(rows, engine.score([r["text"] for r in rows]), strict=True)}
    for r in out:
        d = direct[r["text"]]
        assert r["n_tokens"] == d.n_tokens
        assert r["score"] == pytest.approx(d.score, abs=1e-4)
    # Deterministic with a real model too.
    run_rewrite(cfg.model_copy(update={"output": str(tmp_path / "again")}), BuiltScorer(engine))
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "again")


def test_cli(tmp_path: Path, tiny_pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    teacher, reference = tiny_pair
    path = write_jsonl(tmp_path / "in.jsonl", make_rows(30), extra_lines=[b"oops"])
    base = [
        "rewrite",
        "--teacher",
        str(teacher),
        "--reference",
        str(reference),
        "--max-length",
        "64",
        "--token-budget",
        "1024",
        "--threads",
        "1",
    ]
    out = str(tmp_path / "out")
    assert (
        main(
            [
                *base,
                "--out",
                out,
                "--select",
                "soft",
                "--temperature",
                "0.5",
                "--max-weight",
                "3",
                "--shard-rows",
                "10",
                str(path),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "rewrote 31 documents" in text and "invalid_json" in text
    m = load_manifest(out)
    assert m.totals.documents_out == 30 and m.fingerprint["selection"]["temperature"] == 0.5
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["documents"]["not_scored_by_reason"] == {"invalid_json": 1}
    assert (
        main(
            [
                *base,
                "--out",
                out,
                "--select",
                "soft",
                "--temperature",
                "0.5",
                "--max-weight",
                "3",
                "--shard-rows",
                "10",
                str(path),
            ]
        )
        == 0
    )
    assert "already finished" in capsys.readouterr().out
    assert main([*base, "--out", out, "--ratio", "0.3", str(path)]) == 2
    assert "different settings" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "o2"), "--temperature", "2", str(path)]) == 2
    assert "temperature=2.0 does not apply to method='top-fraction'" in capsys.readouterr().err
