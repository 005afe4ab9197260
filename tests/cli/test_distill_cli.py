"""`reweigh score` then `reweigh distill` end to end on tiny models: the proxy records the pair, refuses wrong texts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scoring.proxy import ProxyScorer
from service.cli import main
from tests.scoring.test_proxy import zebra_sample


@pytest.fixture(scope="module")
def scored(tiny_pair, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("distill")
    texts = root / "docs.jsonl"
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(zebra_sample(60, seed=5).texts)]
    rows += [{"id": "empty", "text": ""}, {"id": "broken"}]  # not scored: counted, never learnt from
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher, reference = tiny_pair
    out = root / "scores.parquet"
    assert main(["score", "--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32",
                 "-o", str(out), str(texts)]) == 0
    return texts, out


def _distill(tiny_pair, texts: Path, scores: Path, out: Path) -> int:
    return main(["distill", "--scores", str(scores), "--texts", str(texts), "--tokenizer", str(tiny_pair[0]),
                 "--out", str(out), "--hash-bits", "12", "--families", "tokens", "--ridge-alphas", "1e-3"])


def test_distill_from_score_output(tiny_pair, scored, tmp_path: Path, capsys) -> None:
    texts, scores = scored
    pair = json.loads(pq.read_schema(scores).metadata[b"reweigh.fingerprint"])
    assert _distill(tiny_pair, texts, scores, tmp_path / "proxy") == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "top-alpha overlap" in printed and "documents/s" in printed
    assert "'not scored by the pair: empty': 1" in printed and "missing_field" in printed
    proxy = ProxyScorer.load(tmp_path / "proxy")
    assert proxy.fingerprint.pair == pair
    assert proxy.fingerprint.training_documents == 60
    report = json.loads((tmp_path / "proxy" / "agreement.json").read_text())
    assert set(report["top_overlap"]) == {"0.3", "0.5", "0.7"}


def test_wrong_texts_are_refused(tiny_pair, scored, tmp_path: Path, capsys) -> None:
    texts, scores = scored
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"x{i}", "text": "x"}) + "\n" for i in range(62)))
    assert _distill(tiny_pair, other, scores, tmp_path / "proxy") == 2
    assert "row 0: texts id 'x0'" in capsys.readouterr().err
    short = tmp_path / "short.jsonl"
    short.write_text("".join(texts.read_text().splitlines(keepends=True)[:10]))
    assert _distill(tiny_pair, short, scores, tmp_path / "proxy") == 2
    assert "the texts have 10 rows, the scores 62" in capsys.readouterr().err
    assert not (tmp_path / "proxy").exists()


def _rewrite(tiny_pair, texts: Path, out: Path, *extra: str) -> int:
    teacher, reference = tiny_pair
    return main(["rewrite", "--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32",
                 "--threads", "1", "--out", str(out), "--ratio", "0.5", *extra, str(texts)])


def test_distill_from_a_rewrite_jobs_checkpoints(tiny_pair, scored, tmp_path: Path) -> None:
    texts, _ = scored
    assert _rewrite(tiny_pair, texts, tmp_path / "job") == 0
    assert _distill(tiny_pair, texts, tmp_path / "job", tmp_path / "proxy") == 0
    job_engine = json.loads((tmp_path / "job" / "manifest.json").read_text())["fingerprint"]["engine"]
    assert ProxyScorer.load(tmp_path / "proxy").fingerprint.pair == job_engine
    # A text edited since it was scored is caught by the checkpoints' content hashes.
    lines = texts.read_text().splitlines(keepends=True)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join([json.dumps({"id": "d0", "text": "changed"}) + "\n", *lines[1:]]))
    assert _distill(tiny_pair, edited, tmp_path / "job", tmp_path / "proxy2") == 2
