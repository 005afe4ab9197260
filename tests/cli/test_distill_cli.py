"""`reweigh score` then `reweigh distill` end to end on tiny models: the proxy records the pair, refuses wrong texts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scoring.proxy import ProxyScorer
from scoring.proxy.train import auto_band
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


# ------------------------------------------------------------------ rewrite jobs with a proxy or a cascade


@pytest.fixture(scope="module")
def proxy_dir(tiny_pair, scored, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rewrite-proxy") / "proxy"
    assert _distill(tiny_pair, *scored, out) == 0
    return out


def _pair_args(tiny_pair) -> list[str]:
    # batch_invariant: a document's pair score does not depend on its batch-mates, so the cascade's
    # and the audit's pair scores equal a pair-only job's exactly.
    teacher, reference = tiny_pair
    return ["--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32", "--threads", "1",
            "--batch-invariant"]


def _chunk_scores(job: Path) -> list[dict]:
    [chunk] = (job / "scores").glob("*/chunk-00000.parquet")
    return pq.read_table(chunk).to_pylist()


def test_rewrite_with_the_proxy_alone(scored, proxy_dir: Path, tmp_path: Path, capsys) -> None:
    texts, _ = scored
    out = tmp_path / "job"
    assert main(["rewrite", "--scorer", f"proxy:{proxy_dir}", "--out", str(out), "--ratio", "0.5", str(texts)]) == 0
    printed = capsys.readouterr().out
    assert "scored by the pair: 0 documents (0.0%); by the proxy alone: 60 (100.0%)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"]["engine"]["scorer"] == "proxy"
    assert "audit_documents" not in manifest["fingerprint"]
    report = json.loads((out / "report.json").read_text())
    assert report["scorer"] == {"kind": "proxy", "documents_by_pair": 0, "documents_by_proxy": 60}
    assert report["documents"]["kept"] == 30 and report["documents"]["dropped_by_reason"]["not_ok"] == 2
    assert report["diagnostics"]["documents"] == 0 and report["diagnostics"]["proxy_scored"] == 60
    table = pq.read_table(out / "shards" / "part-00000.parquet")
    assert table.num_rows == 30
    for column in ("teacher_logprob", "reference_logprob"):  # null, not NaN: no number was computed
        assert table.column(column).null_count == 30
    assert table.column("score").null_count == 0


def test_rewrite_with_the_cascade(tiny_pair, scored, proxy_dir: Path, tmp_path: Path, capsys) -> None:
    texts, _ = scored
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        argv = ["rewrite", *_pair_args(tiny_pair), "--cascade", f"proxy:{proxy_dir}", "--band", "0.4",
                "--audit-documents", "1000", "--out", str(out), "--ratio", "0.5", str(texts)]
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "scored by the pair:" in printed and "audit: the pair also scored" in printed
    for name in ("manifest.json", "report.json", "shards/part-00000.parquet"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    fingerprint = json.loads((runs[0] / "manifest.json").read_text())["fingerprint"]
    assert fingerprint["engine"]["scorer"] == "cascade"
    assert fingerprint["engine"]["band"] == 0.4 and fingerprint["engine"]["alpha"] == 0.5
    assert fingerprint["audit_documents"] == 1000
    report = json.loads((runs[0] / "report.json").read_text())
    scorer = report["scorer"]
    assert scorer["kind"] == "cascade" and 0 < scorer["documents_by_pair"] < 60
    assert scorer["documents_by_pair"] + scorer["documents_by_proxy"] == 60

    # Pair-only: where the pair ran in the cascade, the numbers are the pair-only job's.
    pair_job = tmp_path / "pair"
    assert main(["rewrite", *_pair_args(tiny_pair), "--out", str(pair_job), "--ratio", "0.5", str(texts)]) == 0
    pair = {r["id"]: r for r in _chunk_scores(pair_job)}
    cascade = _chunk_scores(runs[0])
    in_band = [r for r in cascade if r["teacher_logprob"] is not None]
    assert len(in_band) == scorer["documents_by_pair"]
    for r in in_band:
        assert (r["score"], r["teacher_logprob"]) == (pair[r["id"]]["score"], pair[r["id"]]["teacher_logprob"])

    # The audit covered every document the proxy decided alone (1000 > 60): its counts by hand.
    threshold = report["threshold"]
    out_of_band = [r for r in cascade if r["status"] == "ok" and r["teacher_logprob"] is None]
    false_keeps = sum(r["score"] >= threshold > pair[r["id"]]["score"] for r in out_of_band)
    false_drops = sum(r["score"] < threshold <= pair[r["id"]]["score"] for r in out_of_band)
    audit = scorer["audit"]
    assert audit["population"] == audit["documents"] == len(out_of_band) == scorer["documents_by_proxy"]
    assert audit["kept_by_proxy_dropped_by_pair"] == false_keeps
    assert audit["dropped_by_proxy_kept_by_pair"] == false_drops
    assert audit["agreement"] == pytest.approx(1 - (false_keeps + false_drops) / len(out_of_band))
    kept = report["documents"]["kept"]
    assert audit["estimated_selection_agreement"] == pytest.approx(max(0.0, 1 - max(false_keeps, false_drops) / kept))


def test_rewrite_with_band_auto(tiny_pair, scored, proxy_dir: Path, tmp_path: Path, capsys) -> None:
    texts, _ = scored
    out = tmp_path / "auto"
    # ~24 kept calibration documents bound agreement at 95% below 0.9 even when all agree: ask 90% confidence.
    argv = ["rewrite", *_pair_args(tiny_pair), "--cascade", f"proxy:{proxy_dir}", "--band", "auto", "--agreement", "0.9",
            "--confidence", "0.9", "--audit-documents", "0", "--out", str(out), "--ratio", "0.5", str(texts)]
    assert main(argv) == 0
    engine = json.loads((out / "manifest.json").read_text())["fingerprint"]["engine"]
    assert engine["band_auto_agreement"] == 0.9 and engine["band_auto_confidence"] == 0.9
    band = auto_band(ProxyScorer.load(proxy_dir).model, 0.5, 0.9, confidence=0.9)
    assert engine["band"] == band
    assert (f"cascade: alpha 0.5, band {band:.2f} (band=auto: the least band reaching agreement 0.9 with confidence 0.9 "
            "on the proxy's calibration split)") in capsys.readouterr().out
    # The default confidence (95%) cannot be met by so few documents: refused before anything is written.
    refused = tmp_path / "refused"
    argv = [*argv[: argv.index("--confidence")], *argv[argv.index("--confidence") + 2 :]]
    argv[argv.index(str(out))] = str(refused)
    assert main(argv) == 2
    assert "is not reached with confidence 0.95" in capsys.readouterr().err
    assert not refused.exists()


def test_the_audit_sample_is_seeded_and_bounded(tiny_pair, scored, proxy_dir: Path, tmp_path: Path) -> None:
    texts, _ = scored
    audits = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "7")):
        out = tmp_path / name
        argv = ["rewrite", *_pair_args(tiny_pair), "--cascade", f"proxy:{proxy_dir}", "--audit-documents", "5",
                "--seed", seed, "--out", str(out), "--ratio", "0.5", str(texts)]
        assert main(argv) == 0
        audits.append(json.loads((out / "report.json").read_text())["scorer"]["audit"])
    assert audits[0] == audits[1] and audits[0]["documents"] == 5 and audits[0]["seed"] == 0
    assert audits[2]["seed"] == 7 and audits[2]["population"] == audits[0]["population"] > 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--cascade", "proxy:{p}", "--select", "soft"), "--cascade='proxy:"),
        (("--cascade", "proxy:{p}", "--keep-tokens", "100"), "--keep-tokens=100: the cascade's band surrounds"),
        (("--cascade", "proxy:{p}", "--ratio", "1.0"), "there is no threshold to refine"),
        (("--cascade", "proxy:{p}", "--stratify-by", "source"), "--stratify-by='source': each group has its own"),
        (("--scorer", "proxy:{p}", "--min-teacher-logprob", "-5"), "--min-teacher-logprob=-5.0 needs the teacher's"),
        (("--scorer", "proxy:{p}", "--cascade", "proxy:{p}"), "exclude each other"),
        (("--scorer", "nonsense"), "--scorer='nonsense': expected proxy:DIR"),
        (("--band", "0.2"), "--band=0.2 applies to a cascade only"),
        (("--cascade", "proxy:{p}", "--agreement", "0.9"), "--agreement=0.9 applies to --band='auto' only"),
        (("--cascade", "proxy:{p}", "--confidence", "0.9"), "--confidence=0.9 applies to --band='auto' only"),
        (("--cascade", "proxy:{p}", "--band", "auto", "--confidence", "1"), "--confidence"),
        (("--cascade", "proxy:{p}", "--band", "wide"), "--band='wide'"),
        (("--cascade", "proxy:/nowhere"), "'/nowhere' is not a proxy directory"),
    ],
)
def test_rewrite_refuses_what_cannot_work(tiny_pair, scored, proxy_dir, tmp_path, capsys, extra, message) -> None:
    texts, _ = scored
    args = [a.format(p=proxy_dir) for a in extra]
    out = tmp_path / "x"
    pair = [] if args[:2] == ["--scorer", f"proxy:{proxy_dir}"] else _pair_args(tiny_pair)
    assert main(["rewrite", *pair, "--out", str(out), *args, str(texts)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before any output


def test_rewrite_with_a_proxy_needs_no_pair_and_refuses_one(tiny_pair, scored, proxy_dir, tmp_path, capsys) -> None:
    texts, _ = scored
    argv = ["rewrite", "--out", str(tmp_path / "x"), str(texts)]
    assert main(argv) == 2
    assert "--teacher and --reference are required (or --scorer=proxy:DIR" in capsys.readouterr().err
    assert main([*argv[:1], "--scorer", f"proxy:{proxy_dir}", *_pair_args(tiny_pair), *argv[1:]]) == 2
    assert "--teacher and --reference are not used" in capsys.readouterr().err


def test_an_audit_without_a_cascade_is_refused(scored, proxy_dir: Path, tmp_path: Path) -> None:
    from corpus.config import RewriteConfig
    from corpus.rewrite import run_rewrite
    from scoring.errors import ConfigError
    from scoring.proxy import ProxySpec

    texts, _ = scored
    config = RewriteConfig(inputs=[str(texts)], output=str(tmp_path / "job"))
    with pytest.raises(ConfigError, match=r"audit_documents=5 needs a cascade .* this job's scorer is the proxy"):
        run_rewrite(config, ProxySpec(str(proxy_dir)), audit_documents=5)
