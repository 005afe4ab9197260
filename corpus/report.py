"""report.json and the two plots written next to a rewrite's manifest.

The plots are MiniPLM's pictures: the score histogram with the selection threshold, and teacher vs
reference mean log-prob per document coloured kept/dropped (easy documents sit near the diagonal
high up, hard-but-learnable ones above it, noise low on the teacher axis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus import storage
from corpus.storage import JobPath

REPORT_NAME = "report.json"
HISTOGRAM_NAME = "score_histogram.png"
SCATTER_NAME = "logprob_scatter.png"
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
SCATTER_POINTS = 20_000  # a seeded sample beyond this: the picture does not change, the file does
HISTOGRAM_BINS = 80


def build_report(
    *,
    documents_in: int,
    scored: int,
    not_scored: dict[str, int],
    kept: int,
    out_with_repeats: int,
    dropped: dict[str, int],
    tokens_in: int,
    tokens_kept: int,
    tokens_out: int,
    score_quantiles: list[float] | None,
    threshold: float | None,
    repeats_histogram: dict[int, int],
    weight_range: tuple[float, float] | None,
    selection: dict[str, Any],
) -> dict[str, Any]:
    """The report of a selection, from its figures (each a reduction over chunks, or computed over
    every document in memory); the job adds `diagnostics`, `skipped_inputs` and `output_shards`."""
    return {
        "documents": {
            "in": documents_in,
            "scored": scored,
            "not_scored_by_reason": dict(sorted(not_scored.items())),
            "kept": kept,
            "out_with_repeats": out_with_repeats,
            "dropped_by_reason": dict(sorted(dropped.items())),
        },
        "tokens": {"in": tokens_in, "kept": tokens_kept, "out_with_repeats": tokens_out},
        "score_quantiles": (
            {f"{q:g}": float(v) for q, v in zip(QUANTILES, score_quantiles, strict=True)}
            if score_quantiles is not None
            else None
        ),
        "threshold": threshold,
        "repeats_histogram": {str(r): c for r, c in sorted(repeats_histogram.items())},
        "weight_range": list(weight_range) if weight_range is not None else None,
        "selection": selection,
    }


@dataclass(frozen=True)
class PlotData:
    """What the two plots draw: the scored documents' score histogram (HISTOGRAM_BINS equal bins
    over their range) and a sample of them for the scatter (position order)."""

    histogram: npt.NDArray[np.int64]
    edges: npt.NDArray[np.float64]
    threshold: float | None
    teacher: npt.NDArray[np.float64]  # the sample
    reference: npt.NDArray[np.float64]
    kept: npt.NDArray[np.bool_]
    teacher_median: float | None  # over every scored document (the regions' cuts)
    reference_median: float | None
    teacher_max: float | None
    diagnostics: dict[str, Any] | None = None

    @property
    def scored(self) -> int:
        return int(self.histogram.sum())


def histogram_edges(low: float, high: float) -> npt.NDArray[np.float64]:
    return np.histogram_bin_edges(np.array([low, high]), bins=HISTOGRAM_BINS)


def histogram_counts(values: npt.NDArray[np.float64], low: float, high: float) -> npt.NDArray[np.int64]:
    """Counts of `values` in the bins `np.histogram(all values, HISTOGRAM_BINS)` uses when the
    range of all values is [low, high]: per chunk, they add up to the whole corpus's histogram."""
    return np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))[0].astype(np.int64)


def write_report(out_dir: JobPath, report: dict[str, Any]) -> None:
    storage.write_json(out_dir / REPORT_NAME, report)


def write_plots(out_dir: JobPath, data: PlotData) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # No "Software" entry: the PNG bytes then depend on the data alone (not on the matplotlib version).
    metadata: dict[str, Any] = {"Software": None}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if data.scored:
        ax.stairs(data.histogram, data.edges, fill=True, color="#4878a8")
    if data.threshold is not None:
        ax.axvline(data.threshold, color="#c03030", linestyle="--", label=f"threshold {data.threshold:.4g}")
        ax.legend()
    ax.set_xlabel("score = teacher - reference mean log-prob (nats/token)")
    ax.set_ylabel("documents")
    ax.set_title(f"Difference scores ({data.scored} documents)")
    fig.tight_layout()
    storage.write_figure(out_dir / HISTOGRAM_NAME, fig, metadata)
    plt.close(fig)

    teacher, reference, kept = data.teacher, data.reference, data.kept
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    for mask, colour, label in ((~kept, "#b0b0b0", "dropped"), (kept, "#2a8a3a", "kept")):
        ax.scatter(reference[mask], teacher[mask], s=3, c=colour, label=label, alpha=0.6, linewidths=0)
    if len(teacher):
        lo = float(min(reference.min(), teacher.min()))
        hi = float(max(reference.max(), teacher.max()))
        ax.plot([lo, hi], [lo, hi], color="#606060", linewidth=0.8, label="teacher = reference")
    title = "Teacher vs reference: kept and dropped"
    diagnostics = data.diagnostics
    if diagnostics is not None and diagnostics["regions"] and data.teacher_median is not None:
        _draw_regions(ax, data, diagnostics)
        rho = diagnostics["rank_correlations"]["teacher_vs_reference"]
        title += "\nSpearman(teacher, reference) " + ("undefined" if rho is None else f"{rho:.2f}")
        if diagnostics["warnings"]:
            title += "  WARNING: " + ", ".join(w["code"] for w in diagnostics["warnings"])
    ax.set_xlabel("reference mean log-prob (nats/token)")
    ax.set_ylabel("teacher mean log-prob (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", markerscale=4)
    fig.tight_layout()
    storage.write_figure(out_dir / SCATTER_NAME, fig, metadata)
    plt.close(fig)


def _draw_regions(ax: Any, data: PlotData, diagnostics: dict[str, Any]) -> None:
    """The medians that cut MiniPLM's regions (corpus/diagnostics.py), each labelled with its kept share."""
    t_mid, r_mid, t_max = data.teacher_median, data.reference_median, data.teacher_max
    assert t_mid is not None and r_mid is not None and t_max is not None
    ax.axhline(t_mid, color="#8060a0", linewidth=0.6, linestyle=":")
    ax.plot([r_mid, r_mid], [t_mid, t_max], color="#8060a0", linewidth=0.6, linestyle=":")
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
