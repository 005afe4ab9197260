"""How well a cheap scorer agrees with the pair it stands in for: pure functions of score arrays.

- Spearman's rho: the rank correlation (selection only uses ranks).
- Top-alpha overlap: |top-alpha by proxy ∩ top-alpha by pair| / |top-alpha by pair|, the share of
  the pair's selection that the proxy also selects (for equal-size sets, also the share of
  documents whose keep/drop decision is the same when alpha = 0.5).
- MiniPLM region recall. MiniPLM's picture of a corpus (teacher vs reference log-prob) has three
  regions: documents the pair keeps (hard and valuable: the teacher is far better than the
  reference), and among the dropped ones, *easy* ones (teacher log-prob at or above the median:
  both models predict them well) and *noisy* ones (teacher log-prob below the median: even the
  teacher cannot predict them). A region's recall is the share of its documents that the proxy
  treats as the pair does: kept for the first, dropped for the other two. "Noise must still be
  dropped" reads off the noisy recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr

Floats = npt.NDArray[np.float64]
ALPHAS = (0.3, 0.5, 0.7)


def keep_count(alpha: float, n: int) -> int:
    """Documents a top-alpha selection keeps (the sampler's rule: round away float noise, then ceil)."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in (0, 1]")
    return math.ceil(round(alpha * n, 9))


def top_mask(score: npt.ArrayLike, alpha: float) -> npt.NDArray[np.bool_]:
    """Best keep_count(alpha, n) documents by score; ties go to the earlier document (stable)."""
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    mask = np.zeros(len(s), dtype=bool)
    mask[order[: keep_count(alpha, len(s))]] = True
    return mask


def spearman(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a_) != len(b_) or len(a_) < 2:
        raise ValueError(f"spearman needs two arrays of one length >= 2 (got {len(a_)} and {len(b_)})")
    if np.ptp(a_) == 0 or np.ptp(b_) == 0:
        return 0.0  # a constant array has no rank order
    return float(spearmanr(a_, b_).statistic)


def top_overlap_count(proxy: npt.ArrayLike, pair: npt.ArrayLike, alpha: float) -> tuple[int, int]:
    """(documents both top-alpha sets hold, documents the pair's holds): the overlap as a count of trials."""
    by_pair = top_mask(pair, alpha)
    return int((top_mask(proxy, alpha) & by_pair).sum()), int(by_pair.sum())


def top_overlap(proxy: npt.ArrayLike, pair: npt.ArrayLike, alpha: float) -> float:
    both, kept = top_overlap_count(proxy, pair, alpha)
    return both / max(kept, 1)


def region_recall(
    proxy: npt.ArrayLike, pair: npt.ArrayLike, teacher_logprob: npt.ArrayLike, alpha: float = 0.5
) -> dict[str, dict[str, float | int]]:
    """Per MiniPLM region (by the pair): its size and the share the proxy handles the same way."""
    kept_by_pair = top_mask(pair, alpha)
    kept_by_proxy = top_mask(proxy, alpha)
    teacher = np.asarray(teacher_logprob, dtype=np.float64)
    easy_side = teacher >= np.median(teacher)
    regions = {
        "kept (hard, valuable)": (kept_by_pair, kept_by_proxy),
        "dropped: easy": (~kept_by_pair & easy_side, ~kept_by_proxy),
        "dropped: noisy": (~kept_by_pair & ~easy_side, ~kept_by_proxy),
    }
    out: dict[str, dict[str, float | int]] = {}
    for name, (members, same) in regions.items():
        size = int(members.sum())
        out[name] = {"documents": size, "recall": float((members & same).sum() / size) if size else 1.0}
    return out


def cascade_scores(proxy: Floats, pair: Floats, low: float, high: float) -> tuple[Floats, npt.NDArray[np.bool_]]:
    """What the cascade would output: the pair's score inside [low, high], the proxy's elsewhere."""
    in_band = (proxy >= low) & (proxy <= high)
    return np.where(in_band, pair, proxy), in_band


def agreement_report(
    proxy: Floats, pair: Floats, teacher_logprob: Floats, alphas: Sequence[float] = ALPHAS
) -> dict[str, Any]:
    return {
        "documents": len(pair),
        "spearman": spearman(proxy, pair),
        "top_overlap": {f"{a:g}": top_overlap(proxy, pair, a) for a in alphas},
        "regions_at_0.5": region_recall(proxy, pair, teacher_logprob, 0.5),
    }
