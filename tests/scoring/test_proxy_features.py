"""Proxy features: the stats block by hand, and the fast scoring path equal to features @ coef."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scoring.proxy import DistillConfig, distill
from scoring.proxy.features import FAMILIES, STATS, build_features, feature_count, predict, stats_features
from tests.scoring.test_proxy import zebra_sample


def test_stats_by_hand() -> None:
    row = dict(zip(STATS, stats_features(["Ab 1!"], [[5, 6, 5, 6]])[0], strict=True))
    # 5 characters: letters A b, digit 1, one space, capital A, other "!"; tokens 5 6 5 6.
    expected = {
        "log_tokens": math.log(5), "chars_per_token": 5 / 4, "letters": 2 / 5, "digits": 1 / 5, "spaces": 1 / 5,
        "capitals": 1 / 5, "other_chars": 1 / 5, "distinct_tokens": 2 / 4, "distinct_bigrams": 2 / 3,
    }
    assert row == pytest.approx(expected)
    assert stats_features([""], [[]]).tolist() == [[0.0] * len(STATS)]


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_path_equals_the_feature_matrix(family) -> None:
    rng = np.random.default_rng(0)
    texts = ["the zebra ran", "Zebra! 42 zebras", "x"]
    ids = [rng.integers(0, 50, size=n).tolist() for n in (3, 6, 1)]
    coef = rng.normal(size=feature_count(family, 50, 8))
    matrix = build_features(family, texts, ids, 50, 8)
    assert matrix.shape == (3, len(coef))
    np.testing.assert_allclose(predict(family, texts, ids, 50, 8, coef, 0.5), matrix @ coef + 0.5, rtol=1e-12)


def test_rank_target_with_stats_recovers_the_known_token(tmp_path: Path, tiny_tokenizer) -> None:
    config = DistillConfig(hash_bits=12, ridge_alphas=(1e-4, 1e-2), families=("tokens+stats",), target="rank")
    report = distill(zebra_sample(), tiny_tokenizer, tmp_path / "p", config).report
    assert report["chosen"]["family"] == "tokens+stats"
    assert report["spearman"] > 0.95 and report["top_overlap"]["0.5"] >= 0.9
