"""Pair diagnostics on constructed pairs: the correlations, regions and warnings each one must give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from corpus.diagnostics import describe, pair_diagnostics, rank_correlation
from corpus.executor.base import StepContext
from corpus.groups import MISSING
from corpus.scores import ShardScores
from corpus.steps.groups import LabelGroups, read_labels

N = 400
RNG = np.random.default_rng(0)
TEACHER = RNG.normal(-3.0, 0.8, N)


def diagnose(
    teacher: npt.NDArray[np.float64],
    reference: npt.NDArray[np.float64],
    groups: npt.NDArray[np.str_] | None = None,
    ok: npt.NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    score = teacher - reference
    ok = np.ones(len(teacher), dtype=bool) if ok is None else ok
    # top half by score, as top-fraction would keep it
    repeats = np.zeros(len(teacher), dtype=np.int64)
    order = np.argsort(-np.where(ok, score, -np.inf), kind="stable")
    repeats[order[: int(ok.sum()) // 2]] = 1
    return pair_diagnostics(
        teacher_logprob=teacher, reference_logprob=reference, score=score, ok=ok, repeats=repeats, groups=groups
    )


def codes(d: dict[str, Any]) -> list[str]:
    return [w["code"] for w in d["warnings"]]


def test_reference_equal_to_teacher_is_flagged_as_identical() -> None:
    d = diagnose(TEACHER, TEACHER.copy())
    corr = d["rank_correlations"]
    assert corr["teacher_vs_reference"] == pytest.approx(1.0)
    assert corr["score_vs_teacher"] is None and corr["score_vs_reference"] is None  # the score is constant
    assert codes(d) == ["identical_pair"]
    assert d["regions"]["hard"]["documents"] == 0  # both models agree: nothing is teacher-only easy
    assert d["regions"]["easy"]["documents"] == N // 2


def test_constant_reference_makes_the_score_the_teacher() -> None:
    d = diagnose(TEACHER, np.full(N, -6.0))
    corr = d["rank_correlations"]
    assert corr["teacher_vs_reference"] is None
    assert corr["score_vs_teacher"] == pytest.approx(1.0)
    assert codes(d) == ["teacher_dominated"]
    assert "teacher-perplexity filter" in d["warnings"][0]["message"]


def test_weak_random_reference_is_teacher_dominated() -> None:
    reference = np.random.default_rng(1).normal(-6.5, 0.15, N)  # little spread: the demo pair
    d = diagnose(TEACHER, reference)
    assert abs(d["rank_correlations"]["teacher_vs_reference"]) < 0.15
    assert d["rank_correlations"]["score_vs_teacher"] > 0.9
    assert codes(d) == ["teacher_dominated"]


def test_unrelated_reference_of_equal_spread_disagrees() -> None:
    reference = np.random.default_rng(2).normal(-3.0, 0.8, N)
    d = diagnose(TEACHER, reference)
    corr = d["rank_correlations"]
    assert abs(corr["teacher_vs_reference"]) < 0.15
    assert 0.5 < corr["score_vs_teacher"] < 0.9 and -0.9 < corr["score_vs_reference"] < -0.5
    assert codes(d) == ["pair_disagrees"]
    # unrelated models: about half of the teacher-easy documents are reference-hard
    assert 0.35 < d["regions"]["hard"]["documents"] / (N / 2) < 0.65


def test_weak_teacher_is_reference_dominated() -> None:
    teacher = np.random.default_rng(3).normal(-3.0, 0.05, N)
    d = diagnose(teacher, TEACHER - 1.0)
    assert d["rank_correlations"]["score_vs_reference"] < -0.9
    assert codes(d) == ["reference_dominated"]


def test_healthy_pair_raises_no_warning_and_keeps_the_hard_region() -> None:
    residual = np.random.default_rng(4).normal(0.0, 0.4, N)  # what only the teacher knows
    d = diagnose(TEACHER, TEACHER - 1.0 - residual)
    assert d["rank_correlations"]["teacher_vs_reference"] > 0.8
    assert codes(d) == []
    regions = d["regions"]
    assert regions["hard"]["kept_share"] > regions["easy"]["kept_share"]
    assert sum(r["documents"] for r in regions.values()) == N


def test_too_few_documents_never_warn() -> None:
    d = diagnose(TEACHER[:9], np.full(9, -6.0))
    assert d["warnings"] == [] and d["documents"] == 9


def test_unscored_documents_are_left_out() -> None:
    teacher, reference = TEACHER.copy(), np.full(N, -6.0)
    ok = np.ones(N, dtype=bool)
    ok[::4] = False
    teacher[~ok] = np.nan
    reference[~ok] = np.nan
    d = diagnose(teacher, reference, ok=ok)
    assert d["documents"] == int(ok.sum())
    assert d["rank_correlations"]["score_vs_teacher"] == pytest.approx(1.0)


def test_proxy_scored_documents_are_counted_apart_and_grouped_with_the_rest() -> None:
    teacher, reference = TEACHER.copy(), TEACHER - 1.0 - np.random.default_rng(5).normal(0, 0.4, N)
    groups = np.array(["a", "b"] * (N // 2))
    pair_only = diagnose(teacher, reference, groups=groups)
    assert "proxy_scored" not in pair_only  # a pair job's report keeps its shape
    proxy = np.zeros(N, dtype=bool)
    proxy[::3] = True  # scored by a proxy: a score, no log-probs
    score = teacher - reference
    repeats = (score > np.median(score)).astype(np.int64)
    d = pair_diagnostics(
        teacher_logprob=np.where(proxy, np.nan, teacher), reference_logprob=np.where(proxy, np.nan, reference),
        score=score, ok=np.ones(N, dtype=bool), repeats=repeats, groups=groups,
    )
    assert d["documents"] == N - int(proxy.sum()) and d["proxy_scored"] == int(proxy.sum())
    assert sum(r["documents"] for r in d["regions"].values()) == d["documents"]
    assert all(v is not None and np.isfinite(v) for v in d["rank_correlations"].values())
    assert sum(g["documents"] for g in d["groups"].values()) == N  # groups: whichever scorer scored them
    assert sum(g["kept"] for g in d["groups"].values()) == int(repeats.sum())
    assert sum(g["input_share"] for g in d["groups"].values()) == pytest.approx(1.0)
    # Within a group too, the models are compared where both ran.
    assert all(g["teacher_vs_reference"] is not None for g in d["groups"].values())
    assert describe(d)[0].startswith(f"Pair diagnostics (Spearman, over the {d['documents']} documents the pair scored)")
    json.dumps(d, allow_nan=False)


def test_group_shares_are_exact_and_sum_to_one() -> None:
    groups = np.array(["a", "b", "c", "c"] * (N // 4))
    d = diagnose(TEACHER, TEACHER - 1.0 - np.random.default_rng(5).normal(0, 0.4, N), groups=groups)
    g = d["groups"]
    assert list(g) == ["a", "b", "c"]
    assert [g[k]["documents"] for k in g] == [N // 4, N // 4, N // 2]
    assert sum(v["kept"] for v in g.values()) == N // 2
    assert sum(v["output_share"] for v in g.values()) == pytest.approx(1.0)
    assert g["c"]["input_share"] == pytest.approx(0.5)
    for v in g.values():
        assert v["kept_share"] == v["kept"] / v["documents"]
    assert any(line.startswith("Kept per group (teacher vs reference within it): a ") for line in describe(d))


def test_diagnostics_are_deterministic_and_json() -> None:
    reference = np.random.default_rng(2).normal(-3.0, 0.8, N)
    first = json.dumps(diagnose(TEACHER, reference), sort_keys=True)
    assert first == json.dumps(diagnose(TEACHER, reference), sort_keys=True)


def test_rank_correlation_handles_ties_and_constants() -> None:
    assert rank_correlation(np.array([1.0, 1.0, 2.0]), np.array([3.0, 3.0, 4.0])) == pytest.approx(1.0)
    assert rank_correlation(np.array([1.0, 2.0]), np.array([5.0, 5.0])) is None


def test_labels_step_labels_every_row(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    rows = [{"text": "a", "source": "x"}, {"text": "b"}, {"text": "c", "source": 3}, {"text": "d", "source": "y"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shard = ShardScores(input=str(path), format="jsonl", rows=4, chunks=2, ok=4, tokens=0, fields="")
    step = LabelGroups(tmp_path / "out", (str(path),), ((0, shard),), "source", "text", "id", chunk_docs=3)
    assert step.run(0, StepContext()) == {"input": 0, "groups": {"3": 1, MISSING: 1, "x": 1, "y": 1}}
    labels = [read_labels(tmp_path / "out", "source", 0, str(path), chunk).to_pylist() for chunk in (0, 1)]
    assert labels == [["x", MISSING, "3"], ["y"]]


def test_pair_that_agrees_only_within_groups_points_to_stratifying() -> None:
    rng = np.random.default_rng(5)
    groups = np.array(["code"] * (N // 2) + ["verse"] * (N // 2))
    within = rng.normal(0.0, 0.5, N)
    # The teacher knows code well (easy), the reference finds code hardest; inside each group both agree.
    teacher = np.where(groups == "code", -2.0, -4.0) + within
    reference = np.where(groups == "code", -7.0, -5.0) + within + rng.normal(0.0, 0.25, N)
    d = diagnose(teacher, reference, groups)
    assert d["rank_correlations"]["teacher_vs_reference"] < 0.3
    assert all(g["teacher_vs_reference"] > 0.8 for g in d["groups"].values())
    assert codes(d) == ["pair_disagrees_across_groups"]
    assert "--stratify-by" in d["warnings"][0]["message"]
    score = teacher - reference
    stratified = pair_diagnostics(
        teacher_logprob=teacher, reference_logprob=reference, score=score, ok=np.ones(N, dtype=bool),
        repeats=np.ones(N, dtype=np.int64), groups=groups, stratified=True,
    )
    assert codes(stratified) == []  # the job already selects within the groups, where the pair agrees
    # An unrelated reference disagrees within the groups too: the plain warning stays.
    unrelated = diagnose(TEACHER, np.random.default_rng(2).normal(-3.0, 0.8, N), groups)
    assert codes(unrelated) == ["pair_disagrees"]
