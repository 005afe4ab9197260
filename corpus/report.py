"""report.json and the two plots written next to a rewrite's manifest.

The plots are MiniPLM's pictures: the score histogram with the selection threshold, and teacher vs
reference mean log-prob per document coloured kept/dropped (easy documents sit near the diagonal
high up, hard-but-learnable ones above it, noise low on the teacher axis).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus.fsutil import atomic_path, write_json_atomic

REPORT_NAME = "report.json"
HISTOGRAM_NAME = "score_histogram.png"
SCATTER_NAME = "logprob_scatter.png"
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
SCATTER_POINTS = 20_000  # a seeded sample beyond this: the picture does not change, the file does


def build_report(
    *,
    ok: npt.NDArray[np.bool_],
    not_scored: dict[str, int],
    score: npt.NDArray[np.float64],
    n_tokens: npt.NDArray[np.int64],
    repeats: npt.NDArray[np.int64],
    weight: npt.NDArray[np.float64],
    dropped: dict[str, int],
    threshold: float | None,
    selection: dict[str, Any],
) -> dict[str, Any]:
    """The report of a selection; the job adds `skipped_inputs` and `output_shards`."""
    kept = repeats > 0
    ok_scores = score[ok]
    return {
        "documents": {
            "in": len(ok),
            "scored": int(ok.sum()),
            "not_scored_by_reason": dict(sorted(not_scored.items())),
            "kept": int(kept.sum()),
            "out_with_repeats": int(repeats.sum()),
            "dropped_by_reason": dict(sorted(dropped.items())),
        },
        "tokens": {
            "in": int(n_tokens[ok].sum()),
            "kept": int(n_tokens[kept].sum()),
            "out_with_repeats": int((n_tokens * repeats).sum()),
        },
        "score_quantiles": (
            {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(ok_scores, QUANTILES), strict=True)}
            if len(ok_scores)
            else None
        ),
        "threshold": threshold,
        "repeats_histogram": {
            str(int(r)): int(c) for r, c in zip(*np.unique(repeats[kept], return_counts=True), strict=True)
        },
        "weight_range": [float(weight[kept].min()), float(weight[kept].max())] if kept.any() else None,
        "selection": selection,
    }


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    write_json_atomic(out_dir / REPORT_NAME, report)


def write_plots(
    out_dir: Path,
    *,
    score: npt.NDArray[np.float64],
    teacher_logprob: npt.NDArray[np.float64],
    reference_logprob: npt.NDArray[np.float64],
    ok: npt.NDArray[np.bool_],
    kept: npt.NDArray[np.bool_],
    threshold: float | None,
    seed: int,
    diagnostics: dict[str, Any] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # No "Software" entry: the PNG bytes then depend on the data alone (not on the matplotlib version).
    metadata: dict[str, Any] = {"Software": None}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    values = score[ok]
    if len(values):
        ax.hist(values, bins=80, color="#4878a8")
    if threshold is not None:
        ax.axvline(threshold, color="#c03030", linestyle="--", label=f"threshold {threshold:.4g}")
        ax.legend()
    ax.set_xlabel("score = teacher - reference mean log-prob (nats/token)")
    ax.set_ylabel("documents")
    ax.set_title(f"Difference scores ({len(values)} documents)")
    fig.tight_layout()
    with atomic_path(out_dir / HISTOGRAM_NAME) as tmp:
        fig.savefig(tmp, format="png", metadata=metadata)
    plt.close(fig)

    # Only documents with both log-probs have a place in this picture (a proxy scores without them).
    pair_scored = ok & np.isfinite(teacher_logprob) & np.isfinite(reference_logprob)
    idx = np.flatnonzero(pair_scored)
    if len(idx) > SCATTER_POINTS:
        idx = np.sort(np.random.Generator(np.random.PCG64(seed)).choice(idx, SCATTER_POINTS, replace=False))
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    for mask, colour, label in ((~kept[idx], "#b0b0b0", "dropped"), (kept[idx], "#2a8a3a", "kept")):
        ax.scatter(
            reference_logprob[idx][mask],
            teacher_logprob[idx][mask],
            s=3,
            c=colour,
            label=label,
            alpha=0.6,
            linewidths=0,
        )
    if len(idx):
        lo = float(min(reference_logprob[idx].min(), teacher_logprob[idx].min()))
        hi = float(max(reference_logprob[idx].max(), teacher_logprob[idx].max()))
        ax.plot([lo, hi], [lo, hi], color="#606060", linewidth=0.8, label="teacher = reference")
    title = "Teacher vs reference: kept and dropped"
    if diagnostics is not None and pair_scored.any():
        _draw_regions(ax, teacher_logprob[pair_scored], reference_logprob[pair_scored], diagnostics)
        rho = diagnostics["rank_correlations"]["teacher_vs_reference"]
        title += "\nSpearman(teacher, reference) " + ("undefined" if rho is None else f"{rho:.2f}")
        if diagnostics["warnings"]:
            title += "  WARNING: " + ", ".join(w["code"] for w in diagnostics["warnings"])
    ax.set_xlabel("reference mean log-prob (nats/token)")
    ax.set_ylabel("teacher mean log-prob (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", markerscale=4)
    fig.tight_layout()
    with atomic_path(out_dir / SCATTER_NAME) as tmp:
        fig.savefig(tmp, format="png", metadata=metadata)
    plt.close(fig)


def _draw_regions(ax: Any, teacher: npt.NDArray[np.float64], reference: npt.NDArray[np.float64], diagnostics: dict[str, Any]) -> None:
    """The medians that cut MiniPLM's regions (corpus/diagnostics.py), each labelled with its kept share."""
    t_mid, r_mid = float(np.median(teacher)), float(np.median(reference))
    ax.axhline(t_mid, color="#8060a0", linewidth=0.6, linestyle=":")
    ax.plot([r_mid, r_mid], [t_mid, float(teacher.max())], color="#8060a0", linewidth=0.6, linestyle=":")
    regions = diagnostics["regions"]
    places = {
        "easy": (0.98, 0.98, "right", "top"),
        "hard": (0.02, 0.98, "left", "top"),
        "noise": (0.02, 0.02, "left", "bottom"),
    }
    for name, (x, y, ha, va) in places.items():
        r = regions[name]
        share = "-" if r["kept_share"] is None else f"{100 * r['kept_share']:.0f}%"
        ax.text(x, y, f"{name}: {r['documents']} docs, {share} kept", transform=ax.transAxes, ha=ha, va=va,
                fontsize=8, color="#503070")
