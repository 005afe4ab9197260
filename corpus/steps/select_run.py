"""The driver of the distributed selection (corpus/steps/select.py): it runs the passes on an
executor and merges what their tasks return. It holds O(chunks + bracket + sample), never O(documents).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus.config import SelectionConfig
from corpus.diagnostics import REGIONS, assemble, correlations, kept_summary, score_is_constant
from corpus.executor.base import Executor, Result, Step
from corpus.report import HISTOGRAM_BINS, QUANTILES, SCATTER_POINTS, PlotData, build_report, histogram_edges
from corpus.sampler import DROP_REASONS, KEPT
from corpus.scores import ShardScores
from corpus.select_distributed import (
    LEVEL_BITS,
    SAMPLE_SIZE,
    Probe,
    Query,
    cut_target,
    descend,
    exact_cut,
    key_value,
    median_ranks,
    numpy_median,
    numpy_quantiles,
    quantile_ranks,
    sample_bound,
    unpack,
)
from corpus.steps.select import (
    BLOCK_DOCS,
    PARTITION_DOCS,
    Block,
    Dedup,
    Gather,
    Histograms,
    Keep,
    Plots,
    Scatter,
    _BlockPass,
    merge_histograms,
    work_dir,
)
from corpus.steps.select_soft import plan_soft
from corpus.storage import JobPath


def make_blocks(shards: tuple[tuple[int, ShardScores], ...], chunk_docs: int, block_docs: int) -> tuple[Block, ...]:
    chunks = [(index, chunk) for index, shard in shards for chunk in range(shard.chunks)]
    numbered = [(g, index, chunk) for g, (index, chunk) in enumerate(chunks)]
    per_block = max(1, block_docs // chunk_docs)
    return tuple(tuple(numbered[i : i + per_block]) for i in range(0, len(numbered), per_block))


def run_selection(
    executor: Executor,
    out: JobPath,
    inputs: tuple[str, ...],
    shards: tuple[tuple[int, ShardScores], ...],
    chunk_docs: int,
    selection: SelectionConfig,
    seed: int,
    *,
    name: str,
    cancel: threading.Event | None = None,
    block_docs: int = BLOCK_DOCS,
) -> Result:
    """Selection over the scored chunks: what `SelectInMemory` returns and writes."""
    rows = sum(s.rows for _, s in shards)
    blocks = make_blocks(shards, chunk_docs, block_docs)
    partitions = min(256, max(1, math.ceil(rows / PARTITION_DOCS)))

    def run(kind: type[_BlockPass] | None, what: str, **extra: Any) -> list[Result]:
        step: Step = (
            kind(out, inputs, blocks, selection, partitions, f"{name}-{what}", work_dir(out, name), **extra)
            if kind is not None
            else extra["step"]
        )
        return executor.run(out, step, cancel=cancel)

    scattered = run(Scatter, "scatter")
    if selection.drop_duplicates:
        run(Dedup, "dedup")
    scored = sum(r["scored"] for r in scattered)
    ranges = [r["score_range"] for r in scattered if r["score_range"] is not None]
    score_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None

    soft, scale = (None, None)
    if selection.method == "soft":
        soft, scale = plan_soft(run, sum(len(b) for b in blocks), selection, seed)
    cut = Query("score", "eligible", "tokens" if selection.keep_tokens is not None else "docs")
    cut.done = selection.method == "soft"
    stats: dict[str, dict[int, Query]] = {"score": {}, "teacher": {}, "reference": {}}
    if scored:
        wanted = {"score": quantile_ranks(scored, QUANTILES), "teacher": median_ranks(scored)}
        wanted["reference"] = wanted["teacher"]
        for column, ranks in wanted.items():
            # Keys ascend as values descend: the k-th smallest is at descending position n-1-k.
            stats[column] = {k: Query(column, "ok", target=scored - 1 - k) for k in ranks}
    queries = [cut, *(q for by_rank in stats.values() for q in by_rank.values())]
    level = 0
    while active := [q for q in queries if not q.done]:
        probes = tuple(sorted({q.probe for q in active}))
        results = run(Histograms, f"radix{level}", probes=probes)
        merged = merge_histograms(work_dir(out, name), probes, results)
        for q in active:
            counts, units = merged[q.probe]
            if q.target is None:  # the cut: its target comes from the eligible totals
                q.target = cut_target(selection, int(counts.sum()), int(units.sum()))
            descend(q, counts, units)
        level += 1

    gathered = [q for q in queries if q.target is not None and not q.beyond and (q is cut or q.level < len(LEVEL_BITS))]
    probes = tuple(sorted({q.probe for q in gathered}))
    found: dict[Probe, list[npt.NDArray[Any]]] = {}
    if probes:
        results = run(Gather, "gather", probes=probes)
        dtypes = (np.uint64, np.uint64, np.uint64, np.int64, np.int64)
        for i, probe in enumerate(probes):
            found[probe] = [
                np.concatenate([unpack(result["found"][i][k], dt) for result in results]) for k, dt in enumerate(dtypes)
            ]
    first_dropped = None
    if cut.target is not None and not cut.beyond:
        assert cut.target is not None
        first_dropped = exact_cut(cut.above, cut.target, *found[cut.probe])
    values: dict[str, dict[int, float]] = {}
    for column, by_rank in stats.items():
        values[column] = {}
        for k, q in by_rank.items():
            assert q.target is not None
            if q.level == len(LEVEL_BITS):  # the prefix is the whole key
                values[column][k] = key_value(q.prefix)
            else:
                values[column][k] = key_value(int(np.sort(found[q.probe][0])[q.target - q.above]))
    medians = (numpy_median(scored, values["teacher"]), numpy_median(scored, values["reference"])) if scored else None

    bound = sample_bound(scored)
    kept_results = run(
        Keep, "keep", cut=first_dropped, soft=soft, medians=medians, score_range=score_range, sample_below=bound, seed=seed
    )
    report, plots = _figures(scattered, kept_results, scored, values, medians, score_range)
    report["selection"] = {**selection.record(), "seed": seed, "soft_scale": scale}
    run(None, "plots", step=Plots(out, plots, name=f"{name}-plots"))
    return {"kept": [k for r in kept_results for k in r["kept"]], "report": report}


def _figures(
    scattered: list[Result],
    kept: list[Result],
    scored: int,
    values: dict[str, dict[int, float]],
    medians: tuple[float, float] | None,
    score_range: tuple[float, float] | None,
) -> tuple[dict[str, Any], PlotData]:
    """The report (less `selection`) and the plots' data, merged from the blocks' reductions."""
    not_scored: Counter[str] = Counter()
    for r in scattered:
        not_scored.update(r["not_scored"])
    reasons = [sum(column) for column in zip(*(r["reasons"] for r in kept), strict=True)]
    sums: Counter[str] = Counter()
    repeats_histogram: Counter[int] = Counter()
    for r in kept:
        sums.update(r["sums"])
        repeats_histogram.update({int(k): v for k, v in r["repeats_histogram"].items()})
    lasts = [r["last"] for r in kept if r["last"] is not None]
    threshold = max(lasts, key=lambda last: tuple(last[:4]))[4] if lasts else None
    weights = [w for r in kept if r["weight_range"] is not None for w in r["weight_range"]]
    report = build_report(
        documents_in=sum(r["rows"] for r in scattered),
        scored=scored,
        not_scored=dict(not_scored),
        kept=sums["kept"],
        out_with_repeats=sums["out_with_repeats"],
        dropped={DROP_REASONS[i]: int(n) for i, n in enumerate(reasons) if i != KEPT and n},
        tokens_in=sums["tokens_in"],
        tokens_kept=sums["tokens_kept"],
        tokens_out=sums["tokens_out"],
        score_quantiles=numpy_quantiles(scored, QUANTILES, values["score"]) if scored else None,
        threshold=threshold,
        repeats_histogram=dict(repeats_histogram),
        weight_range=(min(weights), max(weights)) if weights else None,
        selection={},
    )
    dtypes = (np.uint64, np.int64, np.float64, np.float64, np.float64, np.bool_)
    sample = [np.concatenate([unpack(r["sample"][k], dt) for r in kept] or [np.empty(0, dt)]) for k, dt in enumerate(dtypes)]
    order = np.argsort(sample[0], kind="stable")[:SAMPLE_SIZE]
    skey, pos, teacher, reference, score, kept_ = (a[order] for a in sample)
    by_position = np.argsort(pos, kind="stable")
    regions = None
    if scored:
        merged = {name: [0, 0] for name in REGIONS}
        for r in kept:
            for name, (docs, k) in r["regions"].items():
                merged[name][0] += docs
                merged[name][1] += k
        regions = {name: kept_summary(*merged[name]) for name in REGIONS}
    assert score_range is not None or not scored
    diagnostics = assemble(
        scored,
        correlations(teacher[by_position], reference[by_position], score[by_position]),
        regions,
        score_range is not None and score_is_constant(scored, *score_range),
        None if scored <= SAMPLE_SIZE else len(order),
    )
    report["diagnostics"] = diagnostics
    shown = np.arange(min(len(skey), SCATTER_POINTS))  # the lowest sample keys, then by position
    shown = shown[np.argsort(pos[shown], kind="stable")]
    teacher_max = max((r["teacher_max"] for r in scattered if r["teacher_max"] is not None), default=None)
    plots = PlotData(
        histogram=np.sum([r["histogram"] for r in kept] or [np.zeros(HISTOGRAM_BINS, np.int64)], axis=0, dtype=np.int64),
        edges=histogram_edges(*score_range) if score_range is not None else histogram_edges(0.0, 1.0),
        threshold=threshold,
        teacher=teacher[shown],
        reference=reference[shown],
        kept=kept_[shown],
        teacher_median=medians[0] if medians else None,
        reference_median=medians[1] if medians else None,
        teacher_max=teacher_max,
        diagnostics=diagnostics,
    )
    return report, plots
