"""Distil a pair's difference scores into a proxy: split, choose by measurement, fit, calibrate, report.

1. Documents the pair scored "ok" are used; exact duplicate texts count once (a copy on both sides
   of the split would flatter the held-out figures). What is left out is counted by reason.
2. Each document's side is decided by a seeded hash of its content: `holdout` of them are held out
   for the report and never fitted on; the rest is cut into `folds` the same way.
3. Every candidate (feature family x ridge penalty) is fitted fold by fold and ranked by how well its
   out-of-fold predictions rank like the pair (Spearman). The cheapest family (tokens, then chars,
   then both: each costs more per document) within `spearman_tolerance` of the best wins, with its best
   penalty: a proxy exists to be fast, and a thousandth of Spearman does not buy 2.5x the cost. The
   table is kept in the card.
4. The winner is refitted on the whole training side. Its out-of-fold predictions give the
   calibration (quantile map onto the pair's scores) and the score distribution the cascade's band
   is read from: both come from documents the fitted model had not seen, like those it will score.
5. The held-out report: agreement with the pair, the cascade's share sent to the pair and its
   agreement at a few bands, and documents/s of the finished scorer on this machine.

Everything is deterministic: the split is by hash, scikit-learn's `lsqr` ridge solver has no
randomness, and the files are written in a fixed order and format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator
from scipy.stats import binomtest, norm, rankdata
from sklearn.linear_model import Ridge
from transformers import PreTrainedTokenizerBase

from scoring.config import AUTO_CONFIDENCE
from scoring.errors import ConfigError, InputError
from scoring.fingerprint import tokenizer_sha256
from scoring.proxy.agreement import ALPHAS, agreement_report, cascade_scores, top_overlap, top_overlap_count
from scoring.proxy.features import FAMILIES, Family, build_features
from scoring.proxy.model import AGREEMENT_NAME, Calibration, ProxyModel, ProxyScorer
from scoring.strict import StrictModel
from scoring.types import content_hash

log = logging.getLogger(__name__)

BANDS = (0.1, 0.2, 0.3, 0.4)
QUANTILE_LEVELS = 1001


class DistillConfig(StrictModel):
    holdout: float = Field(default=0.2, gt=0.0, lt=1.0, description="share of documents held out for the report")
    folds: int = Field(default=3, ge=2, le=10, description="folds for choosing the model by measurement")
    seed: int = 0
    families: tuple[Family, ...] = Field(
        default=FAMILIES, description="feature families to measure (the best out-of-fold is kept)"
    )
    ridge_alphas: tuple[float, ...] = Field(default=(1e-5, 1e-4, 1e-3, 1e-2), description="ridge penalties to measure")
    hash_bits: int = Field(default=20, ge=8, le=26, description="log2 of the hashed n-gram columns")
    min_documents: int = Field(default=20, ge=4, description="fewer scored documents than this are refused")
    spearman_tolerance: float = Field(
        default=0.005, ge=0.0, le=1.0,
        description="prefer a cheaper feature family within this much out-of-fold Spearman of the best (0: the best wins)",
    )
    # Rank r of n becomes the normal quantile at (r - 0.5) / n: selection uses ranks only, and a few
    # extreme scores (noise) then pull the squared loss no harder than any other document. The
    # calibration maps either back onto the pair's scale.
    target: Literal["score", "rank"] = Field(
        default="score",
        description="fit the pair's score, or its rank as a normal score (extreme scores then weigh no more)",
    )

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if not self.families or not self.ridge_alphas:
            raise ConfigError("families and ridge_alphas must each name at least one candidate")
        if any(a <= 0 for a in self.ridge_alphas):
            raise ConfigError(f"ridge_alphas={self.ridge_alphas} must be positive")
        return self


@dataclass(frozen=True)
class Sample:
    """The pair's scored sample: one entry per document, in a fixed order."""

    texts: list[str]
    score: npt.NDArray[np.float64]
    teacher_logprob: npt.NDArray[np.float64]
    status: list[str]


@dataclass(frozen=True)
class DistillResult:
    model: ProxyModel
    report: dict[str, Any]
    heldout: list[int]  # indices into the sample of the documents held out (for further checks)
    # Indices into the sample of the training documents (the order of the model's calibration split),
    # and each one's fold: what a comparison with another learner needs to use the same split.
    trained: list[int]
    fold_of_trained: list[int]


def _unit_interval(seed: int, salt: str, hashes: Sequence[str]) -> npt.NDArray[np.float64]:
    """A seeded uniform number in [0, 1) per document, from its content (order-independent)."""
    out = np.empty(len(hashes), dtype=np.float64)
    for i, h in enumerate(hashes):
        digest = hashlib.sha256(f"{seed}:{salt}:{h}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


def _usable(sample: Sample) -> tuple[npt.NDArray[np.int64], list[str], dict[str, int]]:
    """Indices of documents to learn from, their content hashes, and what was left out by reason."""
    left_out: Counter[str] = Counter()
    seen: set[str] = set()
    keep, hashes = [], []
    for i, (text, status) in enumerate(zip(sample.texts, sample.status, strict=True)):
        if status != "ok" or not np.isfinite(sample.score[i]) or not np.isfinite(sample.teacher_logprob[i]):
            left_out["not scored by the pair: " + status.split(":", 1)[0]] += 1
            continue
        h = content_hash(text)
        if h in seen:
            left_out["duplicate text"] += 1
            continue
        seen.add(h)
        keep.append(i)
        hashes.append(h)
    return np.asarray(keep, dtype=np.int64), hashes, dict(sorted(left_out.items()))


def _fit(
    features: Any, target: npt.NDArray[np.float64], alpha: float, kind: Literal["score", "rank"]
) -> tuple[npt.NDArray[np.float64], float]:
    """Ridge on the columns that occur (hashed spaces are mostly empty, and the solver's cost grows
    with the column count); the others keep a zero coefficient."""
    used = np.unique(features.indices)
    model = Ridge(alpha=alpha, solver="lsqr", tol=1e-6, max_iter=5000)
    if kind == "rank":
        target = norm.ppf((rankdata(target, method="average") - 0.5) / len(target))
    model.fit(features[:, used], target)
    coef = np.zeros(features.shape[1], dtype=np.float64)
    coef[used] = model.coef_
    return coef, float(model.intercept_)


def distill(
    sample: Sample,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    config: DistillConfig | None = None,
    pair_fingerprint: dict[str, Any] | None = None,
) -> DistillResult:
    """Trains a proxy on `sample` and publishes it as the directory `out` (written aside, then renamed)."""
    config = config or DistillConfig()
    started = time.perf_counter()
    idx, hashes, left_out = _usable(sample)
    if len(idx) < config.min_documents:
        raise InputError(
            f"{len(idx)} usable documents (left out: {left_out or 'none'}); distilling needs at least {config.min_documents}"
        )
    texts = [sample.texts[i] for i in idx]
    target = sample.score[idx]
    teacher = sample.teacher_logprob[idx]
    held = _unit_interval(config.seed, "holdout", hashes) < config.holdout
    fold = np.minimum((_unit_interval(config.seed, "fold", hashes) * config.folds).astype(np.int64), config.folds - 1)
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
    if len(test) < 2 or len(train) < config.folds * 2:
        raise InputError(f"split of {len(idx)} documents left {len(train)} to train and {len(test)} held out: too few")
    ids_per_doc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    vocab_size = len(tokenizer)

    # 3. Candidates, measured out of fold on the training side only.
    candidates: list[dict[str, Any]] = []
    measured: list[tuple[float, Family, float, npt.NDArray[np.float64]]] = []
    for family in config.families:
        features = build_features(family, texts, ids_per_doc, vocab_size, config.hash_bits)
        train_x, train_y, train_fold = features[train], target[train], fold[train]
        for alpha in config.ridge_alphas:
            oof = np.empty(len(train), dtype=np.float64)
            for k in range(config.folds):
                inside = train_fold == k
                coef, intercept = _fit(train_x[~inside], train_y[~inside], alpha, config.target)
                oof[inside] = np.asarray(train_x[inside] @ coef) + intercept
            rho = agreement_report(oof, train_y, teacher[train], alphas=(0.5,))
            candidates.append({"family": family, "ridge_alpha": alpha, "oof_spearman": rho["spearman"],
                               "oof_top_0.5": rho["top_overlap"]["0.5"]})
            log.info("candidate %s alpha=%g: out-of-fold spearman %.4f", family, alpha, rho["spearman"])
            measured.append((rho["spearman"], family, alpha, oof))
    _, family, alpha, oof = _choose(measured, config.spearman_tolerance)

    # 4. The winner on the whole training side; calibration and band distribution from its out-of-fold scores.
    features = build_features(family, texts, ids_per_doc, vocab_size, config.hash_bits)
    coef, intercept = _fit(features[train], target[train], alpha, config.target)
    calibration = Calibration.fit(oof, target[train])
    oof_calibrated = calibration(oof)
    levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
    train_seconds = time.perf_counter() - started
    training: dict[str, Any] = {
        "pair": pair_fingerprint,
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "documents": len(idx),
        "train_documents": len(train),
        "heldout_documents": len(test),
        "left_out": left_out,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
    }
    card = {"training": training, "chosen": {"family": family, "ridge_alpha": alpha}, "candidates": candidates}
    model = ProxyModel(
        family=family,
        vocab_size=vocab_size,
        hash_bits=config.hash_bits,
        coef=coef,
        intercept=intercept,
        calibration=calibration,
        score_quantiles=tuple(np.quantile(oof_calibrated, levels).tolist()),
        card=card,
        calibration_proxy=oof_calibrated,
        calibration_pair=target[train],
    )

    # Publish: write aside, load back the scorer exactly as users will, measure, then rename.
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp, tokenizer)
    scorer = ProxyScorer.load(tmp)
    test_texts = [texts[i] for i in test]
    t0 = time.perf_counter()
    proxy_scores = np.asarray([s.score for s in scorer.score(test_texts)], dtype=np.float64)
    seconds = time.perf_counter() - t0
    report = heldout_report(model, proxy_scores, target[test], teacher[test])
    report["documents_per_second"] = len(test) / seconds if seconds else 0.0
    report["train_seconds"] = train_seconds
    report["chosen"] = card["chosen"]
    report["candidates"] = candidates
    report["training"] = {k: v for k, v in training.items() if k != "config"}
    # agreement.json varies run to run (timings): the fingerprint leaves it out.
    (tmp / AGREEMENT_NAME).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return DistillResult(model, report, idx[test].tolist(), idx[train].tolist(), fold[train].tolist())


def _choose(
    measured: list[tuple[float, Family, float, npt.NDArray[np.float64]]], tolerance: float
) -> tuple[float, Family, float, npt.NDArray[np.float64]]:
    """The cheapest family within `tolerance` of the best out-of-fold Spearman, with its best penalty
    (ties: the first measured, so the choice is deterministic)."""
    top = max(m[0] for m in measured)
    near = [m for m in measured if m[0] >= top - tolerance]
    cheapest = min(FAMILIES.index(m[1]) for m in near)
    in_family = [m for m in near if FAMILIES.index(m[1]) == cheapest]
    return max(in_family, key=lambda m: m[0])  # max keeps the first of equal values

def band_limits(model: ProxyModel, alpha: float, band: float) -> tuple[float, float]:
    """Proxy-score interval holding the share `band` of documents around the top-alpha threshold,
    by the proxy's out-of-fold distribution: [Q(1-alpha-band/2), Q(1-alpha+band/2)]."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha} must be in (0, 1) for a cascade (1 keeps everything: no threshold)")
    if not 0.0 <= band <= 1.0:
        raise ConfigError(f"band={band} must be in [0, 1] (the share of documents sent to the pair)")
    centre = 1.0 - alpha
    low = -np.inf if centre - band / 2 <= 0.0 else model.quantile(centre - band / 2)
    high = np.inf if centre + band / 2 >= 1.0 else model.quantile(centre + band / 2)
    return float(low), float(high)


# The bands `auto_band` chooses among: every hundredth, so the choice is a short, exact list.
AUTO_BANDS = tuple(round(b / 100, 2) for b in range(101))
AUTO_LEVELS = (0.9, 0.95, 0.97)


def calibration_agreement(model: ProxyModel, alpha: float, band: float) -> tuple[float, float]:
    """(share sent to the pair, top-alpha agreement with the pair) of a cascade on the calibration split."""
    share, both, kept = _calibration_counts(model, alpha, band)
    return share, both / max(kept, 1)


def _calibration_counts(model: ProxyModel, alpha: float, band: float) -> tuple[float, int, int]:
    if model.calibration_proxy is None or model.calibration_pair is None:
        raise ConfigError("this proxy directory keeps no calibration split (distilled by an older reweigh): "
                          "distil it again to use band=auto, or give a band")
    low, high = band_limits(model, alpha, band)
    mixed, in_band = cascade_scores(model.calibration_proxy, model.calibration_pair, low, high)
    both, kept = top_overlap_count(mixed, model.calibration_pair, alpha)
    return float(in_band.mean()), both, kept


def agreement_lower_bound(both: int, kept: int, confidence: float) -> float:
    """One-sided lower confidence bound on the top-alpha agreement `both / kept` (Wilson score bound).

    Each of the pair's `kept` documents is a trial, kept by the cascade too or not; the true
    agreement is at least this bound with probability `confidence` (the lower end of scipy's
    two-sided Wilson interval at level 2*confidence - 1). confidence 0.5 is the point estimate.
    Trials are treated as independent: an approximation (they share one threshold), stated as such.
    """
    if not 0.5 <= confidence < 1.0:
        raise ConfigError(f"confidence={confidence} must be in [0.5, 1)")
    if kept == 0:
        return 0.0
    return float(binomtest(both, kept).proportion_ci(confidence_level=2 * confidence - 1, method="wilson").low)


def auto_band(model: ProxyModel, alpha: float, agreement: float, confidence: float = AUTO_CONFIDENCE) -> float:
    """The least band from which on every band of AUTO_BANDS reaches `agreement` with `confidence`.

    "Reaches" means the one-sided lower confidence bound (`agreement_lower_bound`) of the cascade's
    top-alpha agreement on the calibration split is at least `agreement`: the point estimate alone
    lands on the asked level only on average, so a band chosen by it falls short on new documents
    about half the time. The calibration split is the training side's out-of-fold predictions: each
    document scored by a model fitted without it, so its errors are those of unseen documents.
    Asking every larger band to reach the level too keeps a lucky dip in a noisy curve from being
    chosen. Deterministic: a pure function of the stored split, alpha, the level and the confidence.
    """
    if not 0.0 < agreement <= 1.0:
        raise ConfigError(f"agreement={agreement} must be in (0, 1]")
    bounds = [agreement_lower_bound(*_calibration_counts(model, alpha, b)[1:], confidence) for b in AUTO_BANDS]
    reached = [bound >= agreement for bound in bounds]
    if not reached[-1]:
        kept = _calibration_counts(model, alpha, AUTO_BANDS[-1])[2]
        raise ConfigError(
            f"agreement={agreement} is not reached with confidence {confidence} at alpha={alpha} by any band on the "
            f"proxy's calibration split (best lower bound {max(bounds):.3f}, from {kept} documents the pair keeps there): "
            "ask for less or a lower confidence, distil on more documents, or score with the pair"
        )
    first = len(reached)
    while first > 0 and reached[first - 1]:
        first -= 1
    return AUTO_BANDS[first]


def heldout_report(
    model: ProxyModel, proxy: npt.NDArray[np.float64], pair: npt.NDArray[np.float64], teacher: npt.NDArray[np.float64]
) -> dict[str, Any]:
    report = agreement_report(proxy, pair, teacher)
    cascade: list[dict[str, Any]] = []
    for alpha in ALPHAS:
        for band in BANDS:
            low, high = band_limits(model, alpha, band)
            mixed, in_band = cascade_scores(proxy, pair, low, high)
            cascade.append({
                "alpha": alpha,
                "band": band,
                "sent_to_pair": float(in_band.mean()),
                "top_overlap": top_overlap(mixed, pair, alpha),
            })
    report["cascade"] = cascade
    auto: list[dict[str, Any]] = []
    for alpha in ALPHAS:
        for level in AUTO_LEVELS:
            try:
                band = auto_band(model, alpha, level)
            except ConfigError:
                auto.append({"alpha": alpha, "agreement": level, "confidence": AUTO_CONFIDENCE, "band": None})
                continue
            low, high = band_limits(model, alpha, band)
            mixed, in_band = cascade_scores(proxy, pair, low, high)
            auto.append({
                "alpha": alpha,
                "agreement": level,
                "confidence": AUTO_CONFIDENCE,
                "band": band,
                "calibration_sent_to_pair": calibration_agreement(model, alpha, band)[0],
                "sent_to_pair": float(in_band.mean()),
                "top_overlap": top_overlap(mixed, pair, alpha),
            })
    report["cascade_auto"] = auto
    return report


def format_report(report: dict[str, Any]) -> str:
    """The agreement report as printed by `reweigh distill`."""
    t = report["training"]
    lines = [
        f"proxy: {report['chosen']['family']} features, ridge alpha {report['chosen']['ridge_alpha']:g}; "
        f"trained on {t['train_documents']} documents, {t['heldout_documents']} held out "
        f"(left out: {t['left_out'] or 'none'}), in {report['train_seconds']:.1f} s",
        f"held-out agreement with the pair ({report['documents']} documents):",
        f"  spearman {report['spearman']:.4f}",
        "  top-alpha overlap " + ", ".join(f"{a}: {v:.1%}" for a, v in report["top_overlap"].items()),
        "  MiniPLM regions at alpha 0.5 (share the proxy treats as the pair does): "
        + ", ".join(f"{name} {r['recall']:.1%} of {r['documents']}" for name, r in report["regions_at_0.5"].items()),
        f"  speed: {report['documents_per_second']:,.0f} documents/s on this machine",
        "cascade on the held-out split (pair run only inside the band): alpha band -> sent to pair, top-alpha agreement",
    ]
    for row in report["cascade"]:
        lines.append(f"  {row['alpha']:.1f} {row['band']:.1f} -> {row['sent_to_pair']:6.1%}, {row['top_overlap']:6.1%}")
    lines.append(f"band=auto (chosen on the calibration split with {AUTO_CONFIDENCE:.0%} confidence, measured held out): "
                 "alpha, asked agreement -> band, sent, agreement")
    for row in report.get("cascade_auto", []):
        if row["band"] is None:
            lines.append(f"  {row['alpha']:.1f} {row['agreement']:.2f} -> not reachable on the calibration split")
        else:
            lines.append(f"  {row['alpha']:.1f} {row['agreement']:.2f} -> band {row['band']:.2f}, "
                         f"{row['sent_to_pair']:6.1%}, {row['top_overlap']:6.1%}")
    return "\n".join(lines)
