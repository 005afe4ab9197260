"""The rewrite job with a fake engine: outputs, global selection, conflicts, errors, cancel, determinism."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus.config import RewriteConfig, SelectionConfig
from corpus.manifest import load_manifest
from corpus.rewrite import RewriteProgress, run_rewrite
from corpus.writers import ADDED_COLUMNS
from scoring.errors import ConfigError, InputError, JobCancelledError, JobConflictError
from scoring.protocols import BuiltScorer
from tests.corpus.fakes import FakeEngine, FakeSpec
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl, write_parquet


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    d = tmp_path / "in"
    d.mkdir()
    a = write_jsonl(d / "a.jsonl", make_rows(120, prefix="a"), extra_lines=[b"not json", b'{"text": ""}'])
    b = write_jsonl(d / "b.jsonl.zst", make_rows(90, prefix="b"))
    c = write_parquet(d / "c.parquet", make_rows(70, prefix="c"))
    return [str(a), str(b), str(c)]


def config(inputs: list[str], out: Path, **kw) -> RewriteConfig:
    return RewriteConfig(inputs=inputs, output=str(out), chunk_docs=32, shard_rows=25, **kw)


def read_output(out: Path) -> list[dict]:
    m = load_manifest(out)
    return [row for s in m.shards for row in pq.read_table(out / s.path).to_pylist()]


def test_end_to_end(tmp_path: Path, inputs: list[str]) -> None:
    out = tmp_path / "out"
    events: list[RewriteProgress] = []
    result = run_rewrite(config(inputs, out), FakeSpec(), progress=events.append)
    m = result.manifest
    assert not result.already_done
    assert m.totals.documents_in == 120 + 2 + 90 + 70
    assert m.totals.rows_out == m.totals.documents_out == 140  # top half of the 280 scored
    assert [i.rows for i in m.inputs] == [122, 90, 70]
    rows = read_output(out)
    assert len(rows) == 140 == sum(s.rows for s in m.shards)
    assert all(s.rows <= 25 for s in m.shards)
    assert m.columns == ["id", "text", "meta", *ADDED_COLUMNS.names]
    assert sum(r["n_tokens"] for r in rows) == m.totals.tokens_out == sum(s.tokens for s in m.shards)
    # Original fields survive untouched, score columns are consistent.
    originals = {
        r["id"]: r for r in make_rows(120, prefix="a") + make_rows(90, prefix="b") + make_rows(70, prefix="c")
    }
    for r in rows:
        assert {k: r[k] for k in ("id", "text", "meta")} == originals[r["id"]]
        assert r["score"] == pytest.approx(r["teacher_logprob"] - r["reference_logprob"])
        assert r["repeats"] == 1 and r["weight"] == 1.0
    assert min(r["score"] for r in rows) == result.report["threshold"]
    # Output keeps input order.
    order = [r["id"] for r in rows]
    assert order == sorted(order, key=lambda i: (i[0], int(i.split("-")[1])))
    report = json.loads((out / "report.json").read_text())
    assert report["documents"]["not_scored_by_reason"] == {"empty": 1, "invalid_json": 1}
    assert report["documents"]["dropped_by_reason"] == {"not_ok": 2, "not_selected": 140}
    for png in ("score_histogram.png", "logprob_scatter.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "work").exists()  # the selection passes' scratch goes once the manifest is written
    phases = [e.phase for e in events]
    assert phases[0] == "scoring" and phases[-1] == "done" and "writing" in phases
    assert events[-1].shards_done == events[-1].shards_total == len(m.shards)


def test_selection_is_global_not_per_shard(tmp_path: Path) -> None:
    rows = make_rows(200)
    engine = FakeEngine()
    scores = {r["text"]: s.score for r, s in zip(rows, engine.score([r["text"] for r in rows]), strict=True)}
    rows.sort(key=lambda r: -scores[r["text"]])
    good = write_jsonl(tmp_path / "good.jsonl", rows[:100])
    bad = write_jsonl(tmp_path / "bad.jsonl", rows[100:])
    result = run_rewrite(config([str(bad), str(good)], tmp_path / "out"), FakeSpec())
    kept = {r["id"] for r in read_output(tmp_path / "out")}
    assert kept == {r["id"] for r in rows[:100]}
    assert result.manifest.totals.rows_out == 100


def test_rerun_is_a_noop(tmp_path: Path, inputs: list[str]) -> None:
    out = tmp_path / "out"
    run_rewrite(config(inputs, out), FakeSpec())
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    engine = FakeEngine()
    again = run_rewrite(config(inputs, out), BuiltScorer(engine))
    assert again.already_done and engine.calls == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_two_runs_are_byte_identical(tmp_path: Path, inputs: list[str]) -> None:
    run_rewrite(config(inputs, tmp_path / "one"), FakeSpec())
    run_rewrite(config(inputs, tmp_path / "two"), FakeSpec())
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")


def test_different_settings_are_refused_unless_overwrite(tmp_path: Path, inputs: list[str]) -> None:
    out = tmp_path / "out"
    run_rewrite(config(inputs, out), FakeSpec())
    with pytest.raises(JobConflictError, match=r"selection\.ratio: null -> 0\.3"):
        run_rewrite(config(inputs, out, selection=SelectionConfig(ratio=0.3)), FakeSpec())
    with pytest.raises(JobConflictError, match="engine"):
        run_rewrite(config(inputs, out), FakeSpec("other-models"))
    result = run_rewrite(
        config(inputs, out, selection=SelectionConfig(ratio=0.3), overwrite=True), FakeSpec()
    )
    assert result.manifest.totals.rows_out == 84
    assert len(read_output(out)) == 84
    assert len(list((out / "shards").iterdir())) == len(result.manifest.shards)  # no stale shards


def test_non_empty_foreign_directory_is_refused(tmp_path: Path, inputs: list[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(JobConflictError, match="not empty"):
        run_rewrite(config(inputs, out), FakeSpec())
    run_rewrite(config(inputs, out, overwrite=True), FakeSpec())
    assert (out / "notes.txt").read_text() == "mine"  # overwrite removes only what a job owns


def test_corrupt_input_fails_naming_it_or_is_skipped_and_listed(tmp_path: Path, inputs: list[str]) -> None:
    broken = Path(inputs[1])
    broken.write_bytes(broken.read_bytes()[:-40])  # truncated zstd
    with pytest.raises(InputError, match=r"b\.jsonl\.zst"):
        run_rewrite(config(inputs, tmp_path / "fail"), FakeSpec())
    result = run_rewrite(config(inputs, tmp_path / "skip", on_error="skip"), FakeSpec())
    m = result.manifest
    assert [s.path for s in m.skipped_inputs] == [inputs[1]]
    assert "truncated zstd" in m.skipped_inputs[0].reason
    assert [i.path for i in m.inputs] == [inputs[0], inputs[2]]
    assert result.report["skipped_inputs"][0]["path"] == inputs[1]
    assert m.totals.documents_in == 122 + 70
    again = run_rewrite(config(inputs, tmp_path / "skip", on_error="skip"), FakeSpec())
    assert again.already_done


def test_missing_input_fails_before_any_scoring(tmp_path: Path, inputs: list[str]) -> None:
    engine = FakeEngine()
    with pytest.raises(InputError, match="does not exist"):
        run_rewrite(config([*inputs, str(tmp_path / "nope.jsonl")], tmp_path / "out"), BuiltScorer(engine))
    assert engine.calls == []


def test_cancel_then_resume_gives_identical_output(tmp_path: Path, inputs: list[str]) -> None:
    run_rewrite(config(inputs, tmp_path / "ref"), FakeSpec())
    cancel = threading.Event()

    def stop_after_some(p: RewriteProgress) -> None:
        if p.phase == "scoring" and p.documents >= 100:
            cancel.set()

    engine = FakeEngine()
    with pytest.raises(JobCancelledError):
        run_rewrite(config(inputs, tmp_path / "out"), BuiltScorer(engine), progress=stop_after_some, cancel=cancel)
    assert not (tmp_path / "out" / "manifest.json").exists()
    scored_before = sum(engine.calls)
    engine2 = FakeEngine()
    run_rewrite(config(inputs, tmp_path / "out"), BuiltScorer(engine2))
    assert sum(engine2.calls) + scored_before == 281  # every readable text once, none twice
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ref")


def test_soft_selection_writes_repeats(tmp_path: Path, inputs: list[str]) -> None:
    sel = SelectionConfig(method="soft", temperature=0.5, max_weight=3.0, target_documents=400)
    result = run_rewrite(config(inputs, tmp_path / "out", selection=sel), FakeSpec())
    rows = read_output(tmp_path / "out")
    assert sum(r["repeats"] for r in rows) == 400 == result.manifest.totals.documents_out
    assert max(r["repeats"] for r in rows) == 3
    assert all(abs(r["repeats"] - r["weight"]) < 1 for r in rows)
    assert result.manifest.totals.tokens_out == sum(r["repeats"] * r["n_tokens"] for r in rows)


def test_shard_bytes_sizing(tmp_path: Path, inputs: list[str]) -> None:
    cfg = RewriteConfig(inputs=inputs, output=str(tmp_path / "out"), shard_bytes=2000, chunk_docs=64)
    result = run_rewrite(cfg, FakeSpec())
    rows = read_output(tmp_path / "out")
    assert len(result.manifest.shards) > 1
    start = 0
    for s in result.manifest.shards:
        text_bytes = sum(len(r["text"].encode()) for r in rows[start : start + s.rows])
        assert text_bytes <= 2000 or s.rows == 1
        start += s.rows


def test_mixed_field_types_become_json_and_missing_fields_null(tmp_path: Path) -> None:
    rows = [
        {"text": f"t {i} " + "x " * i, "extra": [1, 2] if i % 2 else 7, "only_some": i} for i in range(20)
    ]
    for r in rows[::3]:
        del r["only_some"]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    run_rewrite(
        RewriteConfig(inputs=[str(path)], output=str(tmp_path / "out"), selection=SelectionConfig(ratio=1.0)),
        FakeSpec(),
    )
    table = pq.read_table(next((tmp_path / "out" / "shards").iterdir()))
    assert table.schema.field("extra").metadata == {b"reweigh.encoding": b"json"}
    out = {r["text"]: r for r in table.to_pylist()}
    for r in rows:
        assert json.loads(out[r["text"]]["extra"]) == r["extra"]
        assert out[r["text"]]["only_some"] == r.get("only_some")


def test_all_documents_dropped_still_finishes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "empty.jsonl", [{"text": ""}, {"text": "   "}])
    result = run_rewrite(RewriteConfig(inputs=[str(path)], output=str(tmp_path / "out")), FakeSpec())
    assert result.manifest.shards == [] and result.manifest.totals.rows_out == 0
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        RewriteConfig(inputs=["a.jsonl", "a.jsonl"], output="o")
    with pytest.raises(ConfigError, match="inputs"):
        RewriteConfig(inputs=[], output="o")
    with pytest.raises(ConfigError, match="chunk_docs=0"):
        RewriteConfig(inputs=["a.jsonl"], output="o", chunk_docs=0)
    with pytest.raises(ConfigError, match="on_error"):
        RewriteConfig(inputs=["a.jsonl"], output="o", on_error="ignore")  # type: ignore[arg-type]


def test_selection_arrays_match_output(tmp_path: Path, inputs: list[str]) -> None:
    result = run_rewrite(config(inputs, tmp_path / "out"), FakeSpec())
    rows = read_output(tmp_path / "out")
    assert np.isclose(min(r["score"] for r in rows), result.report["threshold"])


def test_empty_and_fully_unreadable_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    junk = write_jsonl(tmp_path / "junk.jsonl", [], extra_lines=[b"nope", b"[1]"])
    good = write_jsonl(tmp_path / "good.jsonl", make_rows(10))
    result = run_rewrite(
        RewriteConfig(inputs=[str(empty), str(junk), str(good)], output=str(tmp_path / "out")), FakeSpec()
    )
    assert [i.rows for i in result.manifest.inputs] == [0, 2, 10]
    assert result.manifest.totals.rows_out == 5
    assert result.report["documents"]["not_scored_by_reason"] == {"invalid_json": 1, "not_object": 1}


def test_failed_job_resumes_with_skip_and_fail_mode_retries_skipped(
    tmp_path: Path, inputs: list[str]
) -> None:
    broken = Path(inputs[1])
    broken.write_bytes(broken.read_bytes()[:-40])
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"b\.jsonl\.zst"):
        run_rewrite(config(inputs, out), FakeSpec())
    engine = FakeEngine()
    result = run_rewrite(config(inputs, out, on_error="skip"), BuiltScorer(engine))
    assert sum(engine.calls) == 70  # input a was scored before the failure and is not rescored
    assert [s.path for s in result.manifest.skipped_inputs] == [inputs[1]]
    with pytest.raises(InputError, match=r"b\.jsonl\.zst"):
        run_rewrite(config(inputs, out), FakeSpec())
    assert run_rewrite(config(inputs, out, on_error="skip"), FakeSpec()).manifest == result.manifest
