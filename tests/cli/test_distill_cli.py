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


@pytest.fixture(scope="module")
def proxy_dir(tiny_pair, scored, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rewrite-proxy") / "proxy"
    assert _distill(tiny_pair, *scored, out) == 0
    return out


def _rewrite(tiny_pair, texts: Path, out: Path, *extra: str) -> int:
    teacher, reference = tiny_pair
    return main(["rewrite", "--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32",
                 "--threads", "1", "--out", str(out), "--ratio", "0.5", *extra, str(texts)])


def test_rewrite_with_the_proxy_alone(scored, proxy_dir: Path, tmp_path: Path, capsys) -> None:
    texts, _ = scored
    out = tmp_path / "job"
    assert main(["rewrite", "--scorer", f"proxy:{proxy_dir}", "--out", str(out), "--ratio", "0.5", str(texts)]) == 0
    assert "scored by the pair: 0 of 60 documents" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"]["engine"]["scorer"] == "proxy"
    table = pq.read_table(out / "shards" / "part-00000.parquet")
    assert table.num_rows == 30 and table.column("teacher_logprob").null_count == 30


def test_rewrite_with_the_cascade(tiny_pair, scored, proxy_dir: Path, tmp_path: Path, capsys) -> None:
    texts, _ = scored
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert _rewrite(tiny_pair, texts, out, "--cascade", f"proxy:{proxy_dir}", "--band", "0.4") == 0
    printed = capsys.readouterr().out
    assert "scored by the pair:" in printed
    for name in ("manifest.json", "report.json", "shards/part-00000.parquet"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    report = json.loads((runs[0] / "report.json").read_text())
    assert 0 < report["documents"]["scored_by_pair"] < 60
    engine = json.loads((runs[0] / "manifest.json").read_text())["fingerprint"]["engine"]
    assert engine["scorer"] == "cascade" and engine["band"] == 0.4 and engine["alpha"] == 0.5
    # Where the pair ran, the cascade's numbers are the pair-only job's.
    assert _rewrite(tiny_pair, texts, tmp_path / "pair") == 0
    cascade = pq.read_table(runs[0] / "shards" / "part-00000.parquet").to_pylist()
    pair = {r["id"]: r for r in pq.read_table(tmp_path / "pair" / "shards" / "part-00000.parquet").to_pylist()}
    both = [r for r in cascade if r["teacher_logprob"] is not None and r["id"] in pair]
    assert both
    for r in both:
        assert r["score"] == pytest.approx(pair[r["id"]]["score"], abs=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--cascade", "proxy:{p}", "--select", "soft"), "--cascade needs --select top-fraction"),
        (("--scorer", "proxy:{p}", "--min-teacher-logprob", "-5"), "--min-teacher-logprob needs"),
        (("--scorer", "proxy:{p}", "--cascade", "proxy:{p}"), "exclude each other"),
        (("--scorer", "nonsense"), "expected proxy:DIR"),
    ],
)
def test_rewrite_refuses_what_cannot_work(tiny_pair, scored, proxy_dir, tmp_path, capsys, extra, message) -> None:
    texts, _ = scored
    args = [a.format(p=proxy_dir) for a in extra]
    if "--select" in args:
        args = [*args[:2], "--select", "soft"]
        teacher, reference = tiny_pair
        code = main(["rewrite", "--teacher", str(teacher), "--reference", str(reference), "--out",
                     str(tmp_path / "x"), *args, str(texts)])
    else:
        code = _rewrite(tiny_pair, texts, tmp_path / "x", *args)
    assert code == 2
    assert message in capsys.readouterr().err


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
