"""Agreement metrics against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.proxy.agreement import (
    agreement_report,
    cascade_scores,
    keep_count,
    region_recall,
    spearman,
    top_mask,
    top_overlap,
)


def test_keep_count_follows_the_samplers_rounding() -> None:
    assert [keep_count(a, 10) for a in (0.3, 0.5, 0.7)] == [3, 5, 7]  # 0.7 * 10 = 7.000000000000001
    assert keep_count(0.5, 5) == 3
    with pytest.raises(ValueError, match="alpha=0"):
        keep_count(0.0, 10)


def test_spearman_by_hand() -> None:
    # ranks 1 2 3 4 vs 1 3 2 4: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([10.0, 20.0, 30.0, 40.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0  # no rank order, not NaN


def test_top_overlap_by_hand() -> None:
    proxy = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3])
    pair = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    assert top_mask(proxy, 0.5).tolist() == [True, True, False, False, True, False]
    # top 3 by proxy {0, 1, 4}, by pair {0, 2, 4}: 2 of 3 shared
    assert top_overlap(proxy, pair, 0.5) == pytest.approx(2 / 3)
    # top 2 (ceil 1.8): {0, 1} vs {0, 2}
    assert top_overlap(proxy, pair, 0.3) == pytest.approx(1 / 2)
    assert top_overlap(pair, pair, 0.7) == 1.0


def test_ties_go_to_the_earlier_document() -> None:
    assert top_mask([1.0, 1.0, 1.0, 0.0], 0.5).tolist() == [True, True, False, False]


def test_region_recall_by_hand() -> None:
    pair = np.array([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])  # pair keeps 0, 1, 2
    teacher = np.array([-1.0, -1.0, -5.0, -1.0, -5.0, -5.0])  # median -3: docs 3 easy, 4 and 5 noisy
    proxy = np.array([4.0, 3.0, 0.5, 2.0, 0.0, -1.0])  # proxy keeps 0, 1, 3
    regions = region_recall(proxy, pair, teacher, 0.5)
    assert regions["kept (hard, valuable)"] == {"documents": 3, "recall": pytest.approx(2 / 3)}
    assert regions["dropped: easy"] == {"documents": 1, "recall": 0.0}  # doc 3 kept by the proxy
    assert regions["dropped: noisy"] == {"documents": 2, "recall": 1.0}


def test_cascade_scores_take_the_pair_inside_the_band() -> None:
    proxy = np.array([0.0, 1.0, 2.0, 3.0])
    pair = np.array([10.0, 11.0, 12.0, 13.0])
    mixed, in_band = cascade_scores(proxy, pair, 1.0, 2.0)
    assert mixed.tolist() == [0.0, 11.0, 12.0, 3.0]
    assert in_band.tolist() == [False, True, True, False]


def test_report_has_every_figure() -> None:
    rng = np.random.default_rng(0)
    pair = rng.normal(size=50)
    report = agreement_report(pair + rng.normal(scale=0.1, size=50), pair, rng.normal(size=50))
    assert report["documents"] == 50
    assert set(report["top_overlap"]) == {"0.3", "0.5", "0.7"}
    assert 0.9 < report["spearman"] <= 1.0
    assert sum(r["documents"] for r in report["regions_at_0.5"].values()) == 50
