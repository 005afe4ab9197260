"""The selection's test oracle, in one process: the whole corpus's scores in memory,
`corpus.sampler.select` over them.

~73 bytes per document at rest and a few times that while selecting: this is the oracle the
distributed selection (corpus/steps/select.py, what jobs run, whatever their method, groups or
scorer) is tested against, and the in-memory baseline bench/selection.py measures. It writes what
the distributed one writes: per-chunk kept files, plots and a report, with the same figures
(`figures`), computed here over every document at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from corpus.config import SelectionConfig
from corpus.diagnostics import pair_diagnostics
from corpus.executor.base import Result, StepContext
from corpus.layout import scores_dir
from corpus.readers import status_kind
from corpus.report import (
    HISTOGRAM_BINS,
    QUANTILES,
    SCATTER_POINTS,
    PlotData,
    build_report,
    histogram_counts,
    histogram_edges,
    write_plots,
)
from corpus.sampler import Selection, select
from corpus.scores import SCORES_SCHEMA, ShardScores, read_chunk_scores
from corpus.select_distributed import SAMPLE_SIZE, sample_bound, sample_key
from corpus.select_distributed import positions as chunk_positions
from corpus.selection_files import KEPT_SCHEMA, KeptChunk, write_kept
from corpus.steps.groups import read_labels
from corpus.steps.select import SELECTION_COLUMNS, hash_prefixes
from corpus.storage import JobPath
from scoring.protocols import ScorerSpec


@dataclass(frozen=True)
class SelectInMemory:
    out: JobPath
    inputs: tuple[str, ...]
    shards: tuple[tuple[int, ShardScores], ...]  # the scored input shards, by input index
    selection: SelectionConfig
    seed: int
    group_field: str | None = None  # labels for stratification and the report's per-group shares
    name: str = "select"
    tasks: int = 1
    scorer: ScorerSpec | None = None

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        arrays, not_scored, chunks = load_arrays(self.out, self.inputs, self.shards)
        field = self.group_field
        groups = None if field is None else load_groups(self.out, self.inputs, field, chunks)
        sel = select(
            self.selection,
            score=arrays["score"],
            teacher_logprob=arrays["teacher_logprob"],
            n_tokens=arrays["n_tokens"],
            ok=arrays["ok"],
            content_hash=arrays["content_hash"],
            seed=self.seed,
            groups=groups if self.selection.stratify_by is not None else None,
            chunk_starts=[lo for _, (lo, _) in chunks] or [0],
        )
        kept_chunks = []
        for (index, chunk), (lo, hi) in chunks:
            mask = sel.repeats[lo:hi] > 0
            if not mask.any():
                continue
            kept = KeptChunk(index, chunk, int(mask.sum()))
            columns = {name: arrays[name][lo:hi][mask] for name in ("row", "text_bytes", "score", "teacher_logprob", "reference_logprob", "n_tokens")}
            columns["repeats"] = sel.repeats[lo:hi][mask]
            columns["weight"] = sel.weight[lo:hi][mask]
            write_kept(self.out, self.inputs, kept, pa.table(columns).select(KEPT_SCHEMA.names))
            kept_chunks.append([kept.input, kept.chunk, kept.rows])
        positions = np.concatenate(
            [chunk_positions(g, hi - lo) for g, (_, (lo, hi)) in enumerate(chunks)] or [np.empty(0, np.int64)]
        )
        report, plots = figures(
            arrays, not_scored, sel, positions, self.seed, groups, stratified=self.selection.stratify_by is not None
        )
        report["selection"] = {**self.selection.record(), "seed": self.seed, "soft_scale": sel.scale}
        if sel.strata is not None:
            report["strata"] = sel.strata
        write_plots(self.out, plots)
        return {"kept": kept_chunks, "report": report}


def figures(
    arrays: dict[str, npt.NDArray[Any]],
    not_scored: dict[str, int],
    sel: Selection,
    positions: npt.NDArray[np.int64],
    seed: int,
    groups: npt.NDArray[np.str_] | None = None,
    *,
    stratified: bool = False,
) -> tuple[dict[str, Any], PlotData]:
    """The report (less `selection`) and the plots' data, from every document's arrays: what the
    distributed selection computes from reductions over chunks (corpus/steps/select.py)."""
    ok, score, n_tokens = arrays["ok"], arrays["score"], arrays["n_tokens"]
    repeats, weight = sel.repeats, sel.weight
    kept = repeats > 0
    values = score[ok]
    report = build_report(
        documents_in=len(ok),
        scored=int(ok.sum()),
        not_scored=not_scored,
        kept=int(kept.sum()),
        out_with_repeats=int(repeats.sum()),
        dropped=sel.dropped,
        tokens_in=int(n_tokens[ok].sum()),
        tokens_kept=int(n_tokens[kept].sum()),
        tokens_out=int((n_tokens * repeats).sum()),
        score_quantiles=[float(v) for v in np.quantile(values, QUANTILES)] if len(values) else None,
        threshold=sel.threshold,
        repeats_histogram={int(r): int(c) for r, c in zip(*np.unique(repeats[kept], return_counts=True), strict=True)},
        weight_range=(float(weight[kept].min()), float(weight[kept].max())) if kept.any() else None,
        selection={},
    )
    n = len(values)
    # The scatter and the correlations need both log-probs: documents a proxy scored have none.
    teacher, reference = arrays["teacher_logprob"], arrays["reference_logprob"]
    pair = ok & np.isfinite(teacher) & np.isfinite(reference)
    sample = scored_sample(pair, positions, seed)
    report["diagnostics"] = pair_diagnostics(
        teacher_logprob=arrays["teacher_logprob"],
        reference_logprob=arrays["reference_logprob"],
        score=score,
        ok=ok,
        repeats=repeats,
        groups=groups,
        sample=None if n <= SAMPLE_SIZE else sample,
        stratified=stratified,
    )
    shown = np.flatnonzero(sample)
    shown = np.sort(shown[np.argsort(sample_key(positions[shown], seed), kind="stable")[:SCATTER_POINTS]])
    plots = PlotData(
        histogram=histogram_counts(values, float(values.min()), float(values.max())) if n else np.zeros(HISTOGRAM_BINS, np.int64),
        edges=histogram_edges(float(values.min()), float(values.max())) if n else histogram_edges(0.0, 1.0),
        threshold=sel.threshold,
        teacher=teacher[shown],
        reference=reference[shown],
        kept=kept[shown],
        teacher_median=float(np.median(teacher[pair])) if pair.any() else None,
        reference_median=float(np.median(reference[pair])) if pair.any() else None,
        teacher_max=float(teacher[pair].max()) if pair.any() else None,
        diagnostics=report["diagnostics"],
    )
    return report, plots


def scored_sample(ok: npt.NDArray[np.bool_], positions: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.bool_]:
    """The SAMPLE_SIZE scored documents with the lowest sample keys (all of them when fewer)."""
    idx = np.flatnonzero(ok)
    keys = sample_key(positions[idx], seed)
    bound = sample_bound(len(idx))
    if bound < 2**64:
        inside = keys < np.uint64(bound)
        idx, keys = idx[inside], keys[inside]
    idx = idx[np.argsort(keys, kind="stable")[:SAMPLE_SIZE]]
    mask = np.zeros(len(ok), dtype=bool)
    mask[idx] = True
    return mask


def load_arrays(
    out: JobPath, inputs: tuple[str, ...], shards: tuple[tuple[int, ShardScores], ...]
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, int], list[tuple[tuple[int, int], tuple[int, int]]]]:
    """Stored scores of every scored chunk, concatenated in input and chunk order (plus `ok`), the
    count of documents not scored by reason kind, and each chunk's [lo, hi) in the arrays.

    Statuses stay in arrow (a Python string per document would cost ~60 bytes each)."""
    tables, chunks, n = [], [], 0
    for index, shard in shards:
        for chunk in range(shard.chunks):
            table = read_chunk_scores(scores_dir(out, index, inputs[index]), chunk, SELECTION_COLUMNS)
            tables.append(table)
            chunks.append(((index, chunk), (n, n + len(table))))
            n += len(table)
    table = pa.concat_tables(tables) if tables else SCORES_SCHEMA.empty_table().select(list(SELECTION_COLUMNS))
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name in ("row", "text_bytes", "n_tokens"):
        arrays[name] = np.asarray(table.column(name).to_numpy(), dtype=np.int64)
    for name in ("teacher_logprob", "reference_logprob", "score"):  # nulls (not scored) -> NaN
        arrays[name] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
    status = table.column("status")
    ok = pc.equal(status, "ok")
    arrays["ok"] = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    not_scored: Counter[str] = Counter()
    for item in pc.value_counts(pc.filter(status, pc.invert(ok))).to_pylist():
        not_scored[status_kind(item["values"])] += item["counts"]
    arrays["content_hash"] = hash_prefixes(table.column("content_hash"), len(table))
    return arrays, dict(sorted(not_scored.items())), chunks


def load_groups(
    out: JobPath, inputs: tuple[str, ...], field: str, chunks: list[tuple[tuple[int, int], tuple[int, int]]]
) -> npt.NDArray[np.str_]:
    """The group labels of every scored chunk (corpus/steps/groups.py), aligned with `load_arrays`."""
    labels = [read_labels(out, field, index, inputs[index], chunk) for (index, chunk), _ in chunks]
    column = pa.chunked_array(labels, pa.string())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)

