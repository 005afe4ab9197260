"""The job's distributed selection (corpus/steps/select.py) equals the in-memory oracle
(tests/corpus/select_oracle.py): every kept row, every figure of the report, over several blocks,
with every radix level forced, and with the correlations taken over a sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import corpus.select_distributed as sd
import corpus.steps.select_run as select_run
import tests.corpus.select_oracle as select_oracle
from corpus.config import SelectionConfig
from corpus.executor.base import StepContext
from corpus.executor.local import LocalExecutor
from corpus.report import QUANTILES
from corpus.select_distributed import key_value, numpy_median, numpy_quantiles, order_key, quantile_ranks
from corpus.steps.select_run import run_selection
from scoring.errors import ConfigError
from tests.corpus.select_oracle import SelectInMemory
from tests.corpus.synthetic_scores import write_synthetic_labels, write_synthetic_scores

INPUTS = ["a.jsonl", "b.jsonl"]
ROWS = [300, 197]
CHUNK_DOCS = 64
LABELS = ["web", "books", "code", "(missing)"]  # "(missing)" is rare: its groups are small


def _selection_files(out: Path) -> dict[str, Any]:
    # repr: a proxy-scored row's log-probs are NaN, which == never equals
    return {str(p.relative_to(out)): repr(pq.read_table(p).to_pylist()) for p in sorted((out / "selection").rglob("*.parquet"))}


def run_both(
    tmp_path: Path, config: SelectionConfig, *, decimals: int = 1, block_docs: int = 128, rows: list[int] = ROWS,
    group_field: str | None = None, proxy: float = 0.0,
) -> tuple[Any, Any]:
    got_dir, want_dir = tmp_path / "dist", tmp_path / "oracle"
    shards = write_synthetic_scores(got_dir, INPUTS, rows, CHUNK_DOCS, seed=5, decimals=decimals, proxy=proxy)
    write_synthetic_scores(want_dir, INPUTS, rows, CHUNK_DOCS, seed=5, decimals=decimals, proxy=proxy)
    labels: tuple[str, ...] = ()
    if group_field is not None:
        for d in (got_dir, want_dir):
            write_synthetic_labels(d, group_field, shards, CHUNK_DOCS, LABELS, seed=5)
        labels = tuple(sorted(LABELS))
    executor = LocalExecutor()
    got = run_selection(
        executor, got_dir, tuple(INPUTS), shards, CHUNK_DOCS, config, 11, name="select-x", block_docs=block_docs,
        group_field=group_field, labels=labels,
    )
    want = SelectInMemory(want_dir, tuple(INPUTS), shards, config, 11, group_field).run(0, StepContext())
    assert _selection_files(got_dir) == _selection_files(want_dir)
    assert (got_dir / "work").is_dir()  # kept for a resumed job: the job removes it after its manifest
    assert (got_dir / "score_histogram.png").is_file() and (got_dir / "logprob_scatter.png").is_file()
    return got, want


CONFIGS = [
    SelectionConfig(),
    SelectionConfig(ratio=0.3, min_teacher_logprob=-3.5),
    SelectionConfig(ratio=1.0),
    SelectionConfig(keep_tokens=20_000),
    SelectionConfig(ratio=0.7, drop_duplicates=False),
    SelectionConfig(method="soft"),
    SelectionConfig(method="soft", temperature=0.5, max_weight=3.0, target_documents=300),
    SelectionConfig(method="soft", min_weight=0.1, drop_duplicates=False, target_documents=800),
    SelectionConfig(method="soft", target_tokens=30_000),  # over budget after the draw: gives back
    SelectionConfig(method="soft", min_weight=0.1, max_weight=2.5, temperature=0.7, target_tokens=90_000),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.model_dump(exclude_defaults=True)))
@pytest.mark.parametrize("bracket", [1 << 16, 3], ids=["one-pass", "every-level"])
def test_matches_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: SelectionConfig, bracket: int
) -> None:
    monkeypatch.setattr(sd, "BRACKET_LIMIT", bracket)
    got, want = run_both(tmp_path, config)
    assert got == want
    assert str(got["report"]["threshold"]) == str(want["report"]["threshold"])  # -0.0 vs 0.0 too


GROUPED = [
    SelectionConfig(ratio=0.4, stratify_by="src"),
    SelectionConfig(ratio=0.4, min_teacher_logprob=-3.5, stratify_by="src", group_shares={"books": 0.25}),
    SelectionConfig(keep_tokens=20_000, stratify_by="src"),
    SelectionConfig(method="soft", stratify_by="src"),
    SelectionConfig(method="soft", temperature=0.5, max_weight=3.0, target_documents=300, stratify_by="src"),
    SelectionConfig(method="soft", target_documents=2, stratify_by="src"),  # small groups get no quota
    SelectionConfig(method="soft", target_tokens=40_000, stratify_by="src", group_shares={"code": 0.3}),
    SelectionConfig(ratio=0.3),  # groups for the report alone
]


@pytest.mark.parametrize(
    ("config", "bracket"),
    [(c, 3) for c in GROUPED] + [(GROUPED[0], 1 << 16)],  # every radix level (one pass: once, as the rest is above)
    ids=lambda v: str(v.model_dump(exclude_defaults=True)) if isinstance(v, SelectionConfig) else str(v),
)
def test_groups_match_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: SelectionConfig, bracket: int
) -> None:
    monkeypatch.setattr(sd, "BRACKET_LIMIT", bracket)
    got, want = run_both(tmp_path, config, group_field="src")
    assert got == want
    groups = got["report"]["diagnostics"]["groups"]
    assert set(groups) == set(LABELS) and all(g["teacher_vs_reference"] is not None for g in groups.values())
    if config.stratify_by is not None:
        assert set(got["report"]["strata"]) == set(LABELS)
        assert sum(s["kept_documents"] for s in got["report"]["strata"].values()) == got["report"]["documents"]["kept"]
    else:
        assert "strata" not in got["report"]


def test_group_correlations_over_a_sample_match_the_oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (sd, select_run, select_oracle):
        monkeypatch.setattr(module, "SAMPLE_SIZE", 120)
    got, want = run_both(tmp_path, SelectionConfig(ratio=0.5, stratify_by="src"), block_docs=64, group_field="src")
    assert got == want
    assert got["report"]["diagnostics"]["rank_correlations_sample"] == 120


@pytest.mark.parametrize(
    ("config", "proxy"),
    [
        (SelectionConfig(ratio=0.4), 0.7),  # a cascade: the pair scored the rest
        (SelectionConfig(keep_tokens=20_000, stratify_by="src"), 0.7),
        (SelectionConfig(method="soft", target_documents=300), 1.0),  # a proxy job: no log-probs at all
    ],
    ids=["cascade", "cascade-stratified", "proxy-soft"],
)
def test_proxy_scored_documents_match_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: SelectionConfig, proxy: float
) -> None:
    monkeypatch.setattr(sd, "BRACKET_LIMIT", 3)
    got, want = run_both(tmp_path, config, group_field="src", proxy=proxy)
    assert got == want
    diagnostics = got["report"]["diagnostics"]
    assert diagnostics["proxy_scored"] > 0
    assert (diagnostics["regions"] is None) == (proxy == 1.0)


def test_proxy_scored_correlations_over_a_sample_match_the_oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (sd, select_run, select_oracle):
        monkeypatch.setattr(module, "SAMPLE_SIZE", 60)
    got, want = run_both(tmp_path, SelectionConfig(ratio=0.5), block_docs=64, group_field="src", proxy=0.5)
    assert got == want
    assert got["report"]["diagnostics"]["rank_correlations_sample"] == 60


def test_exact_ties_take_every_radix_level_then_break_by_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd, "BRACKET_LIMIT", 10)
    got, want = run_both(tmp_path, SelectionConfig(ratio=0.4), decimals=0)  # a handful of distinct scores
    assert got == want


def test_correlations_over_a_sample_match_the_oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (sd, select_run, select_oracle):
        monkeypatch.setattr(module, "SAMPLE_SIZE", 50)
    got, want = run_both(tmp_path, SelectionConfig(ratio=0.5), block_docs=64)
    assert got == want
    assert got["report"]["diagnostics"]["rank_correlations_sample"] == 50


@pytest.mark.parametrize("rows", [[0, 0], [1, 0], [0, 2]])
def test_empty_and_tiny_corpora_match_the_oracle(tmp_path: Path, rows: list[int]) -> None:
    got, want = run_both(tmp_path, SelectionConfig(), rows=rows)
    assert got == want


def test_a_budget_over_the_corpus_is_refused_by_name(tmp_path: Path) -> None:
    shards = write_synthetic_scores(tmp_path, INPUTS, ROWS, CHUNK_DOCS)
    with pytest.raises(ConfigError, match=r"keep_tokens=10000000 exceeds the \d+ tokens of the \d+ eligible"):
        run_selection(LocalExecutor(), tmp_path, tuple(INPUTS), shards, CHUNK_DOCS, SelectionConfig(keep_tokens=10**7), 0, name="s")


def test_order_key_sorts_best_first_and_decodes() -> None:
    scores = np.array([-np.inf, -2.5, -0.0, 0.0, 1e-300, 3.0, np.inf])
    keys = order_key(scores)
    assert list(np.argsort(keys, kind="stable")) == [6, 5, 4, 2, 3, 1, 0]
    assert [key_value(int(k)) for k in keys] == [-np.inf, -2.5, 0.0, 0.0, 1e-300, 3.0, np.inf]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 11, 100, 101, 1000])
def test_quantiles_and_median_from_order_statistics_equal_numpys(n: int) -> None:
    rng = np.random.default_rng(n)
    for values in (rng.normal(0, 1, n), np.round(rng.normal(0, 1, n), 1), np.full(n, -1.5)):
        ordered = np.sort(values)
        stats = {r: float(ordered[r]) for r in range(n)}
        assert set(quantile_ranks(n, QUANTILES)) <= set(stats)
        assert numpy_quantiles(n, QUANTILES, stats) == [float(v) for v in np.quantile(values, QUANTILES)]
        assert numpy_median(n, stats) == float(np.median(values))
