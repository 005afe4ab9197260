"""The proxy: it recovers a score that depends on a known token, is deterministic, and scores like a pair."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from scoring.errors import InputError
from scoring.proxy import DistillConfig, ProxyScorer, Sample, distill
from scoring.proxy.model import CARD_NAME, TOKENIZER_DIR, WEIGHTS_NAME
from scoring.types import STATUS_BLANK, STATUS_EMPTY

_WORDS = "the quick brown fox jumps over lazy dog teacher model reference document score".split()
CONFIG = DistillConfig(hash_bits=12, ridge_alphas=(1e-4, 1e-2))


def zebra_sample(n: int = 240, seed: int = 0, signal: bool = True) -> Sample:
    """Score = 3 x the share of words that are "zebra" (or, without signal, a seeded random number)."""
    rng = random.Random(seed)
    texts, scores = [], []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(20, 60))]
        k = rng.randint(0, len(words) // 3)
        for j in rng.sample(range(len(words)), k):
            words[j] = "zebra"
        texts.append(" ".join(words))
        scores.append(3.0 * k / len(words) if signal else rng.gauss(0.0, 1.0))
    return Sample(texts, np.array(scores), np.full(n, -2.0), ["ok"] * n)


@pytest.fixture(scope="module")
def zebra_proxy(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> tuple[Path, Sample, object]:
    sample = zebra_sample()
    out = tmp_path_factory.mktemp("proxy") / "zebra"
    return out, sample, distill(sample, tiny_tokenizer, out, CONFIG)


def test_recovers_a_score_that_depends_on_a_known_token(zebra_proxy) -> None:
    out, sample, result = zebra_proxy
    report = result.report
    assert report["spearman"] > 0.95
    assert report["top_overlap"]["0.5"] >= 0.9
    scorer = ProxyScorer.load(out)
    heavy, light = scorer.score(["zebra zebra zebra the dog", "the quick brown dog over the lazy fox"])
    assert heavy.score is not None and light.score is not None
    assert heavy.score - light.score > 1.0  # the true difference is 1.8
    held = result.heldout
    assert len(held) == report["documents"] and set(held) < set(range(len(sample.texts)))
    # The training side, in the calibration split's order, with its folds: disjoint from the held-out side.
    assert not set(result.trained) & set(held) and len(result.trained) + len(held) == len(sample.texts)
    assert np.array_equal(result.model.calibration_pair, sample.score[result.trained])
    assert len(result.fold_of_trained) == len(result.trained) and set(result.fold_of_trained) == set(range(CONFIG.folds))


def test_no_signal_is_not_recovered(tmp_path: Path, tiny_tokenizer) -> None:
    """The control: the same texts with scores unrelated to them give no agreement."""
    result = distill(zebra_sample(signal=False), tiny_tokenizer, tmp_path / "noise", CONFIG)
    assert abs(result.report["spearman"]) < 0.4


def test_byte_identical_on_rerun(zebra_proxy, tmp_path: Path, tiny_tokenizer) -> None:
    first, sample, _ = zebra_proxy
    again = tmp_path / "again"
    distill(sample, tiny_tokenizer, again, CONFIG)
    names = [CARD_NAME, WEIGHTS_NAME, *(f"{TOKENIZER_DIR}/{p.name}" for p in sorted((first / TOKENIZER_DIR).iterdir()))]
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    assert ProxyScorer.load(first).fingerprint.digest == ProxyScorer.load(again).fingerprint.digest


def test_scores_like_a_pair(zebra_proxy, tiny_tokenizer) -> None:
    out, _, _ = zebra_proxy
    scorer = ProxyScorer.load(out)
    text = "the lazy dog jumps over the zebra"
    results = scorer.score([text, "", "  \n", text])
    assert results[0] == results[3]
    assert results[0].n_tokens == len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert results[0].ok and results[0].teacher_logprob is None and results[0].reference_logprob is None
    assert [r.status for r in results[1:3]] == [STATUS_EMPTY, STATUS_BLANK]
    # A document's score does not depend on its batch.
    assert scorer.score([text])[0] == results[0]
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        scorer.score([3])  # type: ignore[list-item]
    fp = scorer.fingerprint.as_dict()
    assert fp["scorer"] == "proxy" and fp["training_documents"] == 240 and fp["digest"] == scorer.fingerprint.digest


def test_calibrated_scores_are_on_the_pairs_scale(zebra_proxy) -> None:
    out, sample, result = zebra_proxy
    scores = np.array([s.score for s in ProxyScorer.load(out).score([sample.texts[i] for i in result.heldout])])
    truth = sample.score[result.heldout]
    assert abs(np.median(scores) - np.median(truth)) < 0.1


def test_left_out_documents_are_counted(tmp_path: Path, tiny_tokenizer) -> None:
    base = zebra_sample(60)
    texts = [*base.texts, base.texts[0], "x"]
    sample = Sample(texts, np.append(base.score, [base.score[0], np.nan]), np.full(62, -2.0),
                    [*base.status, "ok", "empty: text has no tokens"])
    result = distill(sample, tiny_tokenizer, tmp_path / "p", CONFIG)
    assert result.report["training"]["left_out"] == {"duplicate text": 1, "not scored by the pair: empty": 1}


def test_too_small_a_sample_is_refused(tmp_path: Path, tiny_tokenizer) -> None:
    with pytest.raises(InputError, match="usable documents"):
        distill(zebra_sample(10), tiny_tokenizer, tmp_path / "p", CONFIG)


def test_not_a_proxy_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a proxy directory"):
        ProxyScorer.load(tmp_path)


def test_the_cheapest_family_near_the_best_is_chosen() -> None:
    from scoring.proxy.train import _choose

    oof = np.zeros(1)
    measured = [(0.760, "tokens", 1e-4, oof), (0.762, "tokens", 1e-3, oof), (0.700, "chars", 1e-4, oof),
                (0.764, "tokens+chars", 1e-4, oof)]
    assert _choose(measured, 0.005)[1:3] == ("tokens", 1e-3)  # within 0.005: tokens, its best penalty
    assert _choose(measured, 0.0)[1:3] == ("tokens+chars", 1e-4)  # no tolerance: the best wins
    assert _choose(measured, 0.001)[1:3] == ("tokens+chars", 1e-4)  # tokens is 0.002 behind
