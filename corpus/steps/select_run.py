"""The driver of the distributed selection (corpus/steps/select.py): it runs the passes on an
executor and merges what their tasks return. It holds O(chunks + bracket + sample) (times the groups,
when stratified), never O(documents).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus.config import SelectionConfig
from corpus.diagnostics import (
    MIN_DOCUMENTS,
    REGIONS,
    GroupCounts,
    assemble,
    correlations,
    kept_summary,
    rank_correlation,
    score_is_constant,
    with_groups,
)
from corpus.executor.base import Executor, Result, Step
from corpus.report import HISTOGRAM_BINS, QUANTILES, SCATTER_POINTS, PlotData, build_report, histogram_edges
from corpus.sampler import DROP_REASONS, KEPT
from corpus.scores import ShardScores
from corpus.select_distributed import (
    LEVEL_BITS,
    SAMPLE_SIZE,
    Probe,
    Query,
    SoftKeep,
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
    SAMPLE_DTYPES,
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
from corpus.steps.select_soft import RunPass, SoftPart, Totals, plan_soft
from corpus.storage import JobPath
from corpus.stratify import Stratum, strata
from scoring.errors import ConfigError


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
    group_field: str | None = None,
    labels: tuple[str, ...] = (),
) -> Result:
    """Selection over the scored chunks: what the in-memory oracle (tests/corpus/select_oracle.py) returns and writes.

    With `group_field`, the labels step's files (corpus/steps/groups.py) give each document its
    group (`labels`: every label found, sorted): per-group figures, and with `stratify_by` one cut
    or soft rule per group (corpus/stratify.py), the guards staying corpus-wide."""
    rows = sum(s.rows for _, s in shards)
    blocks = make_blocks(shards, chunk_docs, block_docs)
    partitions = min(256, max(1, math.ceil(rows / PARTITION_DOCS)))

    def run(kind: type[_BlockPass] | None, what: str, **extra: Any) -> list[Result]:
        step: Step = (
            kind(out, inputs, blocks, selection, partitions, f"{name}-{what}", work_dir(out, name), group_field, labels, **extra)
            if kind is not None
            else extra["step"]
        )
        return executor.run(out, step, cancel=cancel)

    scattered = run(Scatter, "scatter")
    if selection.drop_duplicates:
        run(Dedup, "dedup")
    scored = sum(r["scored"] for r in scattered)
    pair = sum(r["pair"] for r in scattered)  # the medians, regions and sample are the pair-scored documents'
    ranges = [r["score_range"] for r in scattered if r["score_range"] is not None]
    score_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None

    parts = rules(run, sum(len(b) for b in blocks), selection, seed, labels)
    stats: dict[str, dict[int, Query]] = {"score": {}, "teacher": {}, "reference": {}}
    # Keys ascend as values descend: the k-th smallest is at descending position n-1-k.
    if scored:
        stats["score"] = {k: Query("score", "ok", target=scored - 1 - k) for k in quantile_ranks(scored, QUANTILES)}
    if pair:
        for column in ("teacher", "reference"):
            stats[column] = {k: Query(column, "pair", target=pair - 1 - k) for k in median_ranks(pair)}
    queries = [*parts.cuts, *(q for by_rank in stats.values() for q in by_rank.values())]
    level = 0
    while active := [q for q in queries if not q.done]:
        probes = tuple(sorted({q.probe for q in active}))
        results = run(Histograms, f"radix{level}", probes=probes)
        merged = merge_histograms(work_dir(out, name), probes, results)
        for q in active:
            counts, units = merged[q.probe]
            if q.target is None:  # the unstratified cut: its target comes from the eligible totals
                q.target = cut_target(selection, int(counts.sum()), int(units.sum()))
            descend(q, counts, units)
        level += 1

    cuts = {id(q) for q in parts.cuts}
    gathered = [
        q for q in queries if q.target is not None and not q.beyond and (id(q) in cuts or q.level < len(LEVEL_BITS))
    ]
    probes = tuple(sorted({q.probe for q in gathered}))
    found: dict[Probe, list[npt.NDArray[Any]]] = {}
    if probes:
        results = run(Gather, "gather", probes=probes)
        dtypes = (np.uint64, np.uint64, np.uint64, np.int64, np.int64)
        for i, probe in enumerate(probes):
            found[probe] = [
                np.concatenate([unpack(result["found"][i][k], dt) for result in results]) for k, dt in enumerate(dtypes)
            ]
    first_dropped = tuple(
        (q.group, None if q.beyond else exact_cut(q.above, q.target, *found[q.probe]))
        for q in parts.cuts
        if q.target is not None
    )
    values: dict[str, dict[int, float]] = {}
    for column, by_rank in stats.items():
        values[column] = {}
        for k, q in by_rank.items():
            assert q.target is not None
            if q.level == len(LEVEL_BITS):  # the prefix is the whole key
                values[column][k] = key_value(q.prefix)
            else:
                values[column][k] = key_value(int(np.sort(found[q.probe][0])[q.target - q.above]))
    medians = (numpy_median(pair, values["teacher"]), numpy_median(pair, values["reference"])) if pair else None

    bound = sample_bound(pair)
    softs = tuple((group, keep) for group, (keep, _) in parts.softs.items())
    kept_results = run(
        Keep, "keep", cuts=first_dropped, softs=softs, medians=medians, score_range=score_range, sample_below=bound, seed=seed
    )
    report, plots = _figures(scattered, kept_results, scored, values, medians, score_range, labels, selection)
    scale = parts.softs[-1][1] if -1 in parts.softs else None
    report["selection"] = {**selection.record(), "seed": seed, "soft_scale": scale}
    if parts.strata is not None:
        report["strata"] = _strata(parts, kept_results, labels)
    run(None, "plots", step=Plots(out, plots, name=f"{name}-plots"))
    return {"kept": [k for r in kept_results for k in r["kept"]], "report": report}


@dataclass
class Rules:
    """What decides the kept documents: top-fraction cuts to find (radix queries) or solved soft
    rules, per group (-1: the whole corpus), and with `stratify_by` the strata they came from."""

    cuts: list[Query]
    softs: dict[int, tuple[SoftKeep, float]]  # group -> (keep rule, scale c)
    strata: list[Stratum] | None = None
    groups: dict[str, int] = field(default_factory=dict)  # a stratum's label -> its group index


def rules(run: RunPass, chunks: int, selection: SelectionConfig, seed: int, labels: tuple[str, ...]) -> Rules:
    units = "tokens" if selection.keep_tokens is not None else "docs"
    totals: dict[int, list[Any]] = {}
    if selection.stratify_by is not None or selection.method == "soft":
        for r in run(Totals, "totals"):
            for group, documents, tokens, best, worst in r["totals"]:
                t = totals.setdefault(group, [0, 0, -math.inf, math.inf])
                t[0], t[1], t[2], t[3] = t[0] + documents, t[1] + tokens, max(t[2], best), min(t[3], worst)
    if selection.stratify_by is None:
        if selection.method == "top-fraction":
            return Rules([Query("score", "eligible", units)], {})
        if not totals:
            if selection.target_documents or selection.target_tokens:
                raise ConfigError("no eligible documents to weight: every one was dropped by a guard or not scored")
            return Rules([], {})
        documents, tokens, best, worst = totals[-1]
        target = next(t for t in (selection.target_tokens, selection.target_documents, documents) if t is not None)
        return Rules([], plan_soft(run, chunks, selection, [SoftPart(-1, documents, tokens, best, worst, target, seed)]))
    present = sorted(totals)  # labels are sorted: index order is label order
    strata_ = strata(selection, seed, [labels[k] for k in present], [totals[k][0] for k in present], [totals[k][1] for k in present])
    groups = {labels[k]: k for k in present}
    if selection.method == "top-fraction":
        cuts = []
        for part in strata_:
            q = Query("score", "eligible", units, group=groups[part.label])
            q.target = cut_target(part.config, part.documents, part.tokens)
            cuts.append(q)
        return Rules(cuts, {}, strata_, groups)
    soft_parts = [
        SoftPart(groups[p.label], p.documents, p.tokens, totals[groups[p.label]][2], totals[groups[p.label]][3], p.quota, p.seed)
        for p in strata_
        if p.quota  # a group with nothing to hand out has no scale to solve (min_weight may be > 0)
    ]
    return Rules([], plan_soft(run, chunks, selection, soft_parts), strata_, groups)


def _strata(parts: Rules, kept: list[Result], labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The report's `strata`: per group what decided it (as corpus.sampler.select records it)."""
    assert parts.strata is not None
    per_group = _group_sums(kept, labels)
    lasts = _lasts(kept)
    record = {}
    for part in parts.strata:
        k = parts.groups[part.label]
        info: dict[str, Any] = {"eligible_documents": part.documents, "eligible_tokens": part.tokens}
        if part.quota is not None:
            info["quota"] = part.quota
        if part.config.method == "top-fraction":
            info["threshold"] = lasts[k][4] if k in lasts else None
        else:
            info["soft_scale"] = parts.softs[k][1] if k in parts.softs else None
        info["kept_documents"] = int(per_group[1][k])
        info["repeats"] = int(per_group[2][k])
        info["tokens_out"] = int(per_group[3][k])
        record[part.label] = info
    return record


def _group_sums(kept: list[Result], labels: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Per group (columns): scored documents, kept ones, repeats, tokens out, summed over the blocks."""
    total = np.zeros((4, len(labels)), np.int64)
    for r in kept:
        total += np.asarray(r["groups"], dtype=np.int64).reshape(4, len(labels))
    return total


def _lasts(kept: list[Result]) -> dict[int, list[Any]]:
    """Per group, the last kept document in rank order (key, hash, position, score) over the blocks."""
    lasts: dict[int, list[Any]] = {}
    for r in kept:
        for group, last in r["last"].items():
            k = int(group)
            if k not in lasts or tuple(last[:4]) > tuple(lasts[k][:4]):
                lasts[k] = last
    return lasts


def _figures(
    scattered: list[Result],
    kept: list[Result],
    scored: int,
    values: dict[str, dict[int, float]],
    medians: tuple[float, float] | None,
    score_range: tuple[float, float] | None,
    labels: tuple[str, ...] = (),
    selection: SelectionConfig | None = None,
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
    last = _lasts(kept).get(-1)  # stratified: per group, in `strata`
    threshold = last[4] if last is not None else None
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
    sample = [
        np.concatenate([unpack(r["sample"][k], dt) for r in kept] or [np.empty(0, dt)]) for k, dt in enumerate(SAMPLE_DTYPES)
    ]
    order = np.argsort(sample[0], kind="stable")[:SAMPLE_SIZE]
    skey, pos, teacher, reference, score, kept_, group_of = (a[order] for a in sample)
    by_position = np.argsort(pos, kind="stable")
    pair = sum(r["pair"] for r in scattered)
    regions = None
    if pair:
        merged = {name: [0, 0] for name in REGIONS}
        for r in kept:
            for name, (docs, k) in r["regions"].items():
                merged[name][0] += docs
                merged[name][1] += k
        regions = {name: kept_summary(*merged[name]) for name in REGIONS}
    pair_ranges = [r["pair_range"] for r in scattered if r["pair_range"] is not None]
    diagnostics = assemble(
        pair,
        correlations(teacher[by_position], reference[by_position], score[by_position]),
        regions,
        bool(pair_ranges) and score_is_constant(pair, min(r[0] for r in pair_ranges), max(r[1] for r in pair_ranges)),
        None if scored <= SAMPLE_SIZE else len(order),
    )
    proxy_scored = sum(r["usable"] for r in scattered) - pair
    if proxy_scored:
        diagnostics["proxy_scored"] = proxy_scored
    if labels and kept:
        per_group = _group_sums(kept, labels)
        counts = {}
        for k in np.flatnonzero(per_group[0]).tolist():
            mine = by_position[group_of[by_position] == k]
            counts[labels[k]] = GroupCounts(
                int(per_group[0][k]),
                int(per_group[1][k]),
                int(per_group[2][k]),
                rank_correlation(teacher[mine], reference[mine]) if len(mine) >= MIN_DOCUMENTS else None,
            )
        stratified = selection is not None and selection.stratify_by is not None
        with_groups(diagnostics, counts, diagnostics["rank_correlations"]["teacher_vs_reference"], stratified)
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
