"""The cascade: per-document deterministic, the pair's numbers wherever the pair ran, the band's share sent."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring import EngineConfig, ScoringEngine
from scoring.config import PairSpec
from scoring.errors import ConfigError
from scoring.proxy import CascadeScorer, CascadeSpec, ProxyScorer, ProxySpec, Sample, distill
from scoring.proxy.agreement import top_overlap
from scoring.proxy.model import Calibration, ProxyModel
from scoring.proxy.train import agreement_lower_bound, auto_band, calibration_agreement
from scoring.types import DocScore
from tests.scoring.test_proxy import CONFIG, zebra_sample


@dataclass(frozen=True)
class _Fingerprint:
    digest: str = "f" * 64

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest}


class ZebraPair:
    """A stand-in pair: the zebra score plus a text-seeded wobble; records what it was asked."""

    fingerprint = _Fingerprint()

    def __init__(self) -> None:
        self.asked: list[str] = []

    def score(self, texts: Sequence[str], progress: Any = None) -> list[DocScore]:
        self.asked.extend(texts)
        out = []
        for t in texts:
            words = t.split()
            wobble = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big") / 2**32 - 0.5
            score = 3.0 * words.count("zebra") / len(words) + 0.2 * wobble
            out.append(DocScore.from_logprobs(len(words), -2.0 + score, -2.0))
        return out


@pytest.fixture(scope="module")
def zebra_cascade_proxy(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> tuple[Path, list[str]]:
    pair = ZebraPair()
    sample = zebra_sample(300, seed=1)
    scored = pair.score(sample.texts)
    out = tmp_path_factory.mktemp("cascade") / "proxy"
    distill(
        Sample(sample.texts, np.array([s.score for s in scored]), np.full(300, -2.0), ["ok"] * 300),
        tiny_tokenizer, out, CONFIG,
    )
    return out, zebra_sample(200, seed=2).texts  # fresh documents to run the cascade on


def test_pair_runs_only_in_the_band_and_its_numbers_are_kept(zebra_cascade_proxy) -> None:
    proxy_dir, texts = zebra_cascade_proxy
    pair = ZebraPair()
    cascade = CascadeScorer(ProxyScorer.load(proxy_dir), pair, alpha=0.5, band=0.3)
    results = cascade.score(texts)
    pair_only = ZebraPair().score(texts)
    ran = [i for i, r in enumerate(results) if r.teacher_logprob is not None]
    assert sorted(pair.asked) == sorted(texts[i] for i in ran)
    for i in ran:
        assert results[i] == pair_only[i]
    for i, r in enumerate(results):
        if i not in ran:
            assert r.ok and r.reference_logprob is None and not cascade.low <= r.score <= cascade.high
    # The band holds ~30% of the proxy's out-of-fold scores: fresh documents land near that.
    assert 0.15 <= cascade.stats.pair_share <= 0.45
    assert cascade.stats.pair_documents == len(ran)
    agreement = top_overlap([r.score for r in results], [r.score for r in pair_only], 0.5)
    proxy_alone = top_overlap([r.score for r in ProxyScorer.load(proxy_dir).score(texts)],
                              [r.score for r in pair_only], 0.5)
    assert agreement >= proxy_alone and agreement >= 0.9


def test_byte_identical_on_rerun_and_across_chunkings(zebra_cascade_proxy) -> None:
    proxy_dir, texts = zebra_cascade_proxy
    spec = CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.3, band=0.2)
    whole = spec.build().score(texts)
    again = spec.build()
    chunked = [r for start in range(0, len(texts), 7) for r in again.score(texts[start : start + 7])]
    assert repr(whole) == repr(chunked)
    assert spec.build().fingerprint.digest == again.fingerprint.digest
    body = again.fingerprint.as_dict()
    assert body["scorer"] == "cascade" and body["alpha"] == 0.3 and body["pair"] == {"digest": "f" * 64}


def test_band_edges(zebra_cascade_proxy) -> None:
    proxy_dir, texts = zebra_cascade_proxy
    none = CascadeScorer(ProxyScorer.load(proxy_dir), ZebraPair(), alpha=0.5, band=0.0)
    everything = CascadeScorer(ProxyScorer.load(proxy_dir), ZebraPair(), alpha=0.5, band=1.0)
    none.score(texts)
    everything.score(texts)
    assert none.stats.pair_share < 0.05 and everything.stats.pair_share == 1.0
    with pytest.raises(ConfigError, match="alpha=1"):
        CascadeScorer(ProxyScorer.load(proxy_dir), ZebraPair(), alpha=1.0, band=0.3)
    with pytest.raises(ConfigError, match=r"band=1\.5"):
        CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.5, band=1.5)


@dataclass(frozen=True)
class _ZebraSpec:
    def build(self) -> ZebraPair:
        return ZebraPair()


@pytest.mark.slow
def test_with_a_real_pair_matches_pair_only_where_the_pair_ran(tiny_pair, tmp_path: Path, tiny_tokenizer) -> None:
    teacher, reference = tiny_pair
    config = EngineConfig(dtype="float32", device="cpu", num_threads=1)
    engine = ScoringEngine.from_pretrained(teacher, reference, config)
    train = zebra_sample(120, seed=3).texts
    scored = engine.score(train)
    distill(
        Sample(train, np.array([s.score for s in scored]), np.array([s.teacher_logprob for s in scored]),
               [s.status for s in scored]),
        tiny_tokenizer, tmp_path / "proxy", CONFIG,
        pair_fingerprint=engine.fingerprint.as_dict(),
    )
    texts = zebra_sample(40, seed=4).texts
    spec = CascadeSpec(ProxySpec(str(tmp_path / "proxy")), PairSpec(str(teacher), str(reference), config), 0.5, 0.4)
    first, second = spec.build(), spec.build()
    results = first.score(texts)
    assert repr(results) == repr(second.score(texts))
    assert first.fingerprint.as_dict()["proxy"]["pair"]["digest"] == engine.fingerprint.digest
    pair_only = engine.score(texts)
    ran = [i for i, r in enumerate(results) if r.teacher_logprob is not None]
    assert ran
    for i in ran:
        # Batched with other documents than in the pair-only run: equal up to fp32 summation order.
        assert results[i].score == pytest.approx(pair_only[i].score, abs=1e-5)
        assert results[i].n_tokens == pair_only[i].n_tokens


def _hand_model(proxy: list[float], pair: list[float]) -> ProxyModel:
    """A proxy whose calibration split is given by hand (band_limits reads its quantiles)."""
    p = np.asarray(proxy, dtype=np.float64)
    return ProxyModel(
        family="tokens", vocab_size=1, hash_bits=8, coef=np.zeros(1 + 2**8), intercept=0.0,
        calibration=Calibration((0.0, 1.0), (0.0, 1.0)),
        score_quantiles=tuple(np.quantile(p, np.linspace(0.0, 1.0, 1001)).tolist()), card={},
        calibration_proxy=p, calibration_pair=np.asarray(pair, dtype=np.float64),
    )


def test_auto_band_is_the_least_band_reaching_the_level_by_hand() -> None:
    # Proxy ranks 0..9; the pair swaps documents 4 and 5 across the median, so at alpha 0.5 the proxy
    # alone agrees on 4 of 5. The band must hold proxy scores 4 and 5: Q(0.5 -/+ b/2) = 9 (0.5 -/+ b/2)
    # reaches them from b = 1/9 on, i.e. 0.12 on the grid of hundredths. Confidence 0.5: the point
    # estimate (5 kept documents bound nothing at 95%).
    pair = [0, 1, 2, 3, 5, 4, 6, 7, 8, 9]
    model = _hand_model(list(range(10)), pair)
    assert calibration_agreement(model, 0.5, 0.11) == (0.0, 0.8)
    assert calibration_agreement(model, 0.5, 0.12) == (0.2, 1.0)
    assert auto_band(model, 0.5, 1.0, confidence=0.5) == 0.12
    assert auto_band(model, 0.5, 0.8, confidence=0.5) == 0.0  # the proxy alone reaches it
    # At 95% even 5 of 5 only bounds the agreement at 5 / (5 + z^2) = 0.649: refused, naming why.
    with pytest.raises(ConfigError, match=r"agreement=0\.8 is not reached with confidence 0\.95.*best lower bound 0\.649, from 5"):
        auto_band(model, 0.5, 0.8)
    # Not reachable: the two documents the pair ranks best are the proxy's worst, below any band at
    # alpha 0.3 (band 1 covers quantiles 0.2..1), and they keep scores that rank them out.
    reversed_model = _hand_model(list(range(10)), [100.0 - i for i in range(10)])
    with pytest.raises(ConfigError, match=r"agreement=0\.97 is not reached with confidence 0\.5 at alpha=0\.3"):
        auto_band(reversed_model, 0.3, 0.97, confidence=0.5)
    with pytest.raises(ConfigError, match="no calibration split"):
        auto_band(replace(model, calibration_proxy=None), 0.5, 0.9)


def _wilson_low(both: int, kept: int) -> float:
    """The one-sided 95% Wilson lower bound, written out: (p + z²/2n - z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    z, p, n = 1.6448536269514722, both / kept, kept  # z = Phi^-1(0.95)
    return (p + z * z / (2 * n) - z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)


def test_agreement_lower_bound_is_wilsons_by_hand() -> None:
    assert agreement_lower_bound(95, 100, 0.95) == pytest.approx(0.9008389, abs=1e-7) == pytest.approx(_wilson_low(95, 100))
    assert agreement_lower_bound(5, 5, 0.95) == pytest.approx(5 / (5 + 1.6448536269514722**2))  # p = 1
    assert agreement_lower_bound(94, 100, 0.5) == 0.94  # confidence 0.5: the point estimate
    assert agreement_lower_bound(0, 0, 0.95) == 0.0
    with pytest.raises(ConfigError, match=r"confidence=0\.4 must be in \[0\.5, 1\)"):
        agreement_lower_bound(1, 2, 0.4)


def test_auto_band_with_a_margin_by_hand() -> None:
    # 200 documents, proxy = rank; the pair swaps documents 99-j and 100+j (j = 0..9) across the
    # median. At alpha 0.5 (100 kept) the band [Q(0.5-b/2), Q(0.5+b/2)] = 99.5 -/+ 99.5 b holds pair j
    # from b >= (j + 0.5) / 99.5 on, and each pair it holds is one more agreeing document:
    # b = 0.00 -> 90/100, 0.04 -> 94/100, 0.05 -> 95/100, 0.07 -> 97/100, 0.10 -> 100/100.
    pair = list(range(200))
    for j in range(10):
        pair[99 - j], pair[100 + j] = 100 + j, 99 - j
    model = _hand_model(list(range(200)), pair)
    for band, agree in ((0.0, 0.90), (0.04, 0.94), (0.05, 0.95), (0.07, 0.97), (0.10, 1.0)):
        assert calibration_agreement(model, 0.5, band)[1] == agree
    # Point estimate: 0.9 at band 0, 0.97 at 0.07.
    assert auto_band(model, 0.5, 0.9, confidence=0.5) == 0.0
    assert auto_band(model, 0.5, 0.97, confidence=0.5) == 0.07
    # 95% lower bounds: 94/100 -> 0.888, 95/100 -> 0.901 (so 0.9 needs band 0.05); 99/100 -> 0.956,
    # 100/100 -> 100 / (100 + z^2) = 0.974 (so 0.97 needs every pair: band 0.10).
    assert _wilson_low(94, 100) < 0.9 <= _wilson_low(95, 100)
    assert _wilson_low(99, 100) < 0.97 <= _wilson_low(100, 100)
    assert auto_band(model, 0.5, 0.9) == 0.05
    assert auto_band(model, 0.5, 0.97) == 0.10


def test_auto_band_cascade_fixes_its_band_and_names_the_level(zebra_cascade_proxy) -> None:
    proxy_dir, texts = zebra_cascade_proxy
    proxy = ProxyScorer.load(proxy_dir)
    assert proxy.model.calibration_proxy is not None  # distil keeps the split; it survives save/load
    band = auto_band(proxy.model, 0.5, 0.95)
    spec = CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.5, band="auto", agreement=0.95)
    first, second = spec.build(), spec.build()
    assert first.band == band and calibration_agreement(proxy.model, 0.5, band)[1] >= 0.95
    body = first.fingerprint.as_dict()
    assert body["band"] == band and body["band_auto_agreement"] == 0.95 and body["band_auto_confidence"] == 0.95
    fixed = CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), 0.5, band).build().fingerprint.as_dict()
    assert "band_auto_agreement" not in fixed and "band_auto_confidence" not in fixed
    # Another confidence is another band choice: it is in the fingerprint.
    lower = CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.5, band="auto", agreement=0.95, confidence=0.5)
    assert lower.build().fingerprint.as_dict()["band_auto_confidence"] == 0.5
    with pytest.raises(ConfigError, match=r"confidence=1\.0 must be in \[0\.5, 1\)"):
        CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.5, band="auto", agreement=0.95, confidence=1.0)
    assert repr(first.score(texts)) == repr(second.score(texts))
    with pytest.raises(ConfigError, match="band='auto' needs agreement"):
        CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.5, band="auto")
    with pytest.raises(ConfigError, match=r"agreement=0\.9 applies to band='auto' only"):
        CascadeSpec(ProxySpec(str(proxy_dir)), _ZebraSpec(), alpha=0.5, band=0.3, agreement=0.9)
