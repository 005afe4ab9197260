"""Step 2, distributed: selection as passes of per-block tasks (corpus/select_distributed.py).

A block is a run of consecutive scores chunks (about BLOCK_DOCS documents). The passes, each a step
the executor runs (so each task has its completion marker, and a killed job resumes):

    scatter      per block: guard counts, score range; (hash, position) of candidates by partition
    dedup        per partition: the positions of duplicates (every occurrence after the first)
    radix<L>     per block: histograms of the sought keys' next digits (the driver descends)
    gather       per block: the documents of the bins the queries ended in (at most BRACKET_LIMIT)
    totals       stratified or soft: eligible documents, tokens and score range, per group (select_soft.py)
    soft-*       soft selection: the scale's bisection, per-chunk sums (select_soft.py)
    keep         per block: the kept rows of each chunk (selection files) and the report's reductions
    plots        one task: the plots, from the merged histogram and sample; removes the work files

With groups (the labels step's files, corpus/steps/groups.py), each row carries its group's index
among the job's sorted labels: stratified, every query, sum and keep rule is one per group, and
the keep pass sums the report's per-group figures. The guards stay corpus-wide.

The driver (`run_selection`, corpus/steps/select_run.py) holds only what the tasks return: counts, sparse histograms, the
bracket (one per group when stratified), a bounded sample, and one entry per kept chunk.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from corpus import storage
from corpus.config import SelectionConfig
from corpus.diagnostics import REGIONS, region_masks
from corpus.executor.base import Result, StepContext
from corpus.layout import WORK_DIR, scores_dir
from corpus.readers import status_kind
from corpus.report import (
    HISTOGRAM_BINS,
    PlotData,
    histogram_counts,
    write_plots,
)
from corpus.sampler import DROP_REASONS, HASH_BYTES, KEPT
from corpus.scores import read_chunk_scores
from corpus.select_distributed import (
    DEDUP_DTYPE,
    LEVEL_BITS,
    ChunkArrays,
    Probe,
    SoftKeep,
    before_cut,
    duplicate_positions,
    guards,
    hash_words,
    level_digits,
    mark_duplicates,
    order_key,
    pack,
    positions,
    sample_key,
    scatter_entries,
    under_prefix,
)
from corpus.selection_files import KEPT_SCHEMA, KeptChunk, write_kept
from corpus.steps.groups import read_labels
from corpus.storage import JobPath
from scoring.protocols import ScorerSpec

BLOCK_DOCS = 1 << 20  # documents per task: a block's arrays are ~100 MB on the worker
PARTITION_DOCS = 1 << 22  # documents per dedup partition (24 bytes each while it is sorted)

SELECTION_COLUMNS = (
    "row",
    "content_hash",
    "text_bytes",
    "n_tokens",
    "teacher_logprob",
    "reference_logprob",
    "score",
    "status",
)

Block = tuple[tuple[int, int, int], ...]  # (chunk in job order, input, chunk in input)
SAMPLE_DTYPES = (np.uint64, np.int64, np.float64, np.float64, np.float64, np.bool_, np.int64)  # key .. kept, group
_COLUMNS = {"score": "score", "teacher": "teacher_logprob", "reference": "reference_logprob"}


# ------------------------------------------------------------------------------------ files


def work_dir(out: JobPath, name: str) -> JobPath:
    return out / WORK_DIR / name


def save_array(path: JobPath, array: npt.NDArray[Any]) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    storage.write_bytes(path, buffer.getvalue())


def load_array(path: JobPath, mmap: bool = False) -> npt.NDArray[Any]:
    # A store's object is read whole (no memory map over a network).
    if isinstance(path, Path):
        return np.load(path, mmap_mode="r" if mmap else None)
    return np.load(io.BytesIO(storage.read_bytes(path)))


@dataclass
class LoadedChunk:
    arrays: ChunkArrays
    table: pa.Table  # the stored columns (row, text_bytes, status, ...)
    group: npt.NDArray[np.int64] | None = None  # each row's group: its index among the job's labels


def load_chunk(out: JobPath, inputs: tuple[str, ...], index: int, chunk: int) -> LoadedChunk:
    table = read_chunk_scores(scores_dir(out, index, inputs[index]), chunk, SELECTION_COLUMNS)

    def floats(name: str) -> npt.NDArray[np.float64]:  # nulls (not scored) -> NaN
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    arrays = ChunkArrays(
        score=floats("score"),
        teacher_logprob=floats("teacher_logprob"),
        reference_logprob=floats("reference_logprob"),
        n_tokens=np.asarray(table.column("n_tokens").to_numpy(), dtype=np.int64),
        ok=np.asarray(pc.equal(table.column("status"), "ok").to_numpy(zero_copy_only=False), dtype=bool),
        content_hash=hash_prefixes(table.column("content_hash"), len(table)),
    )
    return LoadedChunk(arrays, table)


def hash_prefixes(column: pa.ChunkedArray | pa.Array, n: int) -> npt.NDArray[np.bytes_]:
    """The first HASH_BYTES of each content hash (zeros for unreadable rows, which are never eligible)."""
    out = np.zeros(n, dtype=f"S{HASH_BYTES}")
    start = 0
    pieces = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in pieces:
        filled = chunk.fill_null(b"\0" * 32)
        raw = np.frombuffer(filled.buffers()[1], dtype="S32", count=len(filled) + filled.offset)[filled.offset :]
        out[start : start + len(filled)] = raw.astype(f"S{HASH_BYTES}")
        start += len(filled)
    return out


# ------------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class _BlockPass:
    out: JobPath
    inputs: tuple[str, ...]
    blocks: tuple[Block, ...]
    selection: SelectionConfig
    partitions: int
    name: str
    work: JobPath  # the selection's scratch files (work_dir)
    group_field: str | None = None  # the labels step's field (corpus/steps/groups.py), when the job has groups
    labels: tuple[str, ...] = ()  # every label it found, sorted: a group is its index here

    @property
    def tasks(self) -> int:
        return len(self.blocks)

    @property
    def scorer(self) -> ScorerSpec | None:
        return None

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        raise NotImplementedError

    def chunks(self, rank: int) -> Iterator[tuple[tuple[int, int, int], LoadedChunk, npt.NDArray[np.bool_], npt.NDArray[np.uint8]]]:
        """((chunk in job order, input, chunk), its arrays, eligible, reason) per chunk of block `rank`."""
        dups = self.duplicates()
        for g, index, chunk in self.blocks[rank]:
            yield (g, index, chunk), *self.load(g, index, chunk, dups)

    def duplicates(self) -> list[npt.NDArray[np.int64]]:
        """The dedup pass's sorted duplicate positions, one memory-mapped array per partition."""
        if not self.selection.drop_duplicates:
            return []
        return [load_array(self.work / f"dups-{p:04d}.npy", mmap=True) for p in range(self.partitions)]

    def load(
        self, g: int, index: int, chunk: int, dups: list[npt.NDArray[np.int64]]
    ) -> tuple[LoadedChunk, npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
        """One chunk's arrays (with its rows' groups), eligible rows and reasons, after every guard."""
        loaded = load_chunk(self.out, self.inputs, index, chunk)
        if self.group_field is not None:
            column = read_labels(self.out, self.group_field, index, self.inputs[index], chunk)
            group = pc.index_in(column, value_set=pa.array(self.labels, pa.string()))
            loaded.group = np.asarray(group.to_numpy(zero_copy_only=False), dtype=np.int64)
        eligible, reason = guards(self.selection, loaded.arrays)
        mark_duplicates(reason, eligible, g, dups)
        return loaded, eligible, reason


@dataclass(frozen=True)
class Scatter(_BlockPass):
    """Counts for the report, the scored score range, and the dedup candidates by partition.

    Documents a proxy scored (a proxy job, or a cascade outside its band) have a score but no
    log-probs: the diagnostics (medians, regions, correlations, scatter) cover the pair-scored ones."""

    def run(self, rank: int, ctx: StepContext) -> Result:
        parts: list[list[npt.NDArray[Any]]] = [[] for _ in range(self.partitions)]
        rows = scored = usable = pair = 0
        not_scored: Counter[str] = Counter()
        lows, highs, pair_lows, pair_highs, teacher_highs = [], [], [], [], []
        for g, index, chunk in self.blocks[rank]:
            ctx.check_cancel(f"selecting (block {rank})")
            loaded = load_chunk(self.out, self.inputs, index, chunk)
            c = loaded.arrays
            rows += len(c.ok)
            scored += int(c.ok.sum())
            usable += int((c.ok & np.isfinite(c.score)).sum())
            status = loaded.table.column("status")
            for item in pc.value_counts(pc.filter(status, pc.invert(pc.equal(status, "ok")))).to_pylist():
                not_scored[status_kind(item["values"])] += item["counts"]
            if c.ok.any():
                lows.append(float(c.score[c.ok].min()))
                highs.append(float(c.score[c.ok].max()))
            both = pair_scored(c)
            if both.any():
                pair += int(both.sum())
                pair_lows.append(float(c.score[both].min()))
                pair_highs.append(float(c.score[both].max()))
                teacher_highs.append(float(c.teacher_logprob[both].max()))
            if self.selection.drop_duplicates:
                eligible, _ = guards(self.selection, c)
                for p, entries in enumerate(scatter_entries(c, eligible, g, self.partitions)):
                    parts[p].append(entries)
        if self.selection.drop_duplicates:
            storage.make_dir(self.work)
            for p, pieces in enumerate(parts):
                save_array(self.work / f"p{p:04d}-b{rank:06d}.npy", np.concatenate(pieces))
        return {
            "rows": rows,
            "scored": scored,
            "not_scored": dict(not_scored),
            "score_range": [min(lows), max(highs)] if lows else None,
            "usable": usable,  # scored with a finite score
            "pair": pair,  # of which the pair scored (log-probs: the diagnostics' documents)
            "pair_range": [min(pair_lows), max(pair_highs)] if pair_lows else None,
            "teacher_max": max(teacher_highs) if teacher_highs else None,
        }


@dataclass(frozen=True)
class Dedup(_BlockPass):
    """Task p: the duplicates among partition p's candidates of every block."""

    @property
    def tasks(self) -> int:
        return self.partitions

    def run(self, rank: int, ctx: StepContext) -> Result:
        entries = np.concatenate(
            [load_array(self.work / f"p{rank:04d}-b{b:06d}.npy") for b in range(len(self.blocks))]
            or [np.empty(0, DEDUP_DTYPE)]
        )
        dups = duplicate_positions(entries)
        save_array(self.work / f"dups-{rank:04d}.npy", dups)
        return {"duplicates": len(dups)}


def pair_scored(c: ChunkArrays) -> npt.NDArray[np.bool_]:
    """Scored rows with both log-probs (not scored by a proxy alone)."""
    assert c.reference_logprob is not None  # load_chunk reads it
    return c.ok & np.isfinite(c.teacher_logprob) & np.isfinite(c.reference_logprob)


def _subset(probe: Probe, loaded: LoadedChunk, eligible: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    subset = {"eligible": eligible, "ok": loaded.arrays.ok}[probe[1]] if probe[1] != "pair" else pair_scored(loaded.arrays)
    return subset if probe[5] < 0 else subset & in_group(loaded, probe[5])


def in_group(loaded: LoadedChunk, group: int) -> npt.NDArray[np.bool_]:
    """The chunk's rows of group `group` (every row for -1)."""
    if group < 0:
        return np.ones(len(loaded.arrays.ok), dtype=bool)
    assert loaded.group is not None
    return loaded.group == group


def _units(probe: Probe, c: ChunkArrays) -> npt.NDArray[np.int64]:
    return c.n_tokens if probe[2] == "tokens" else np.ones(len(c.ok), np.int64)


def _column(probe: Probe, c: ChunkArrays) -> npt.NDArray[np.float64]:
    values: npt.NDArray[np.float64] | None = getattr(c, _COLUMNS[probe[0]])
    assert values is not None
    return values


@dataclass(frozen=True)
class Histograms(_BlockPass):
    """Per probe (column, subset, units, level, prefix): counts and units of the next digit of the
    keys under the prefix, sparse (the digits present only). They go to a work file, not into the
    result: the driver merges the blocks' files one at a time, so it holds one merged histogram per
    probe however many blocks there are (`merge_histograms`)."""

    probes: tuple[Probe, ...] = ()

    def run(self, rank: int, ctx: StepContext) -> Result:
        counts = [np.zeros(1 << LEVEL_BITS[p[3]], np.int64) for p in self.probes]
        units = [np.zeros(1 << LEVEL_BITS[p[3]], np.int64) for p in self.probes]
        for _, loaded, eligible, _ in self.chunks(rank):
            ctx.check_cancel(f"selecting (block {rank})")
            c = loaded.arrays
            keys: dict[str, npt.NDArray[np.uint64]] = {}
            for i, probe in enumerate(self.probes):
                key = keys.setdefault(probe[0], order_key(_column(probe, c)))
                inside = _subset(probe, loaded, eligible) & under_prefix(key, probe[3], probe[4])
                digits = level_digits(key[inside], probe[3])
                size = len(counts[i])
                counts[i] += np.bincount(digits, minlength=size)
                weights = _units(probe, c)[inside]
                units[i] += np.bincount(digits, weights=weights, minlength=size).astype(np.int64)
        rows = []
        for i, (c_, u_) in enumerate(zip(counts, units, strict=True)):
            nz = np.flatnonzero(c_)
            rows.append(np.stack([np.full(len(nz), i, np.int64), nz.astype(np.int64), c_[nz], u_[nz]], axis=1))
        storage.make_dir(self.work)
        path = self.work / f"{self.name}-b{rank:06d}.npy"
        save_array(path, np.concatenate(rows) if rows else np.empty((0, 4), np.int64))
        return {"file": path.name}


def merge_histograms(work: JobPath, probes: tuple[Probe, ...], results: list[Result]) -> dict[Probe, tuple[Any, Any]]:
    """Each probe's counts and units per digit, summed over the blocks' histogram files."""
    merged = {p: (np.zeros(1 << LEVEL_BITS[p[3]], np.int64), np.zeros(1 << LEVEL_BITS[p[3]], np.int64)) for p in probes}
    for result in results:
        rows = load_array(work / result["file"])
        for i, probe in enumerate(probes):
            mine = rows[rows[:, 0] == i]
            counts, units = merged[probe]
            counts[mine[:, 1]] += mine[:, 2]
            units[mine[:, 1]] += mine[:, 3]
    return merged


@dataclass(frozen=True)
class Gather(_BlockPass):
    """Per probe, the documents under its (final) prefix: for the cut, their whole rank key and
    units; for an order statistic, the keys alone."""

    probes: tuple[Probe, ...] = ()

    def run(self, rank: int, ctx: StepContext) -> Result:
        found: list[list[list[npt.NDArray[Any]]]] = [[[] for _ in range(5)] for _ in self.probes]
        for (g, _, _), loaded, eligible, _ in self.chunks(rank):
            c = loaded.arrays
            for i, probe in enumerate(self.probes):
                key = order_key(_column(probe, c))
                rows = np.flatnonzero(_subset(probe, loaded, eligible) & under_prefix(key, probe[3], probe[4]))
                found[i][0].append(key[rows])
                if probe[1] == "eligible":
                    hi, lo = hash_words(c.content_hash[rows])
                    found[i][1].append(hi)
                    found[i][2].append(lo)
                    found[i][3].append((g << 20) | rows)
                    found[i][4].append(_units(probe, c)[rows])
        dtypes = (np.uint64, np.uint64, np.uint64, np.int64, np.int64)
        return {
            "found": [
                [pack(np.concatenate(parts).astype(dt)) if parts else pack(np.empty(0, dt)) for parts, dt in zip(f, dtypes, strict=True)]
                for f in found
            ]
        }


@dataclass(frozen=True)
class Keep(_BlockPass):
    """The final pass: every chunk's kept rows (its selection file) and the report's reductions.

    The rules come per group (-1: the whole corpus; a group's index when stratified): a top-fraction
    cut is the rank key of the first document not kept (None: every eligible one is), a soft rule
    the scale and the draw's spans (None: nothing to hand out)."""

    cuts: tuple[tuple[int, tuple[int, int, int, int] | None], ...] = ()
    softs: tuple[tuple[int, SoftKeep | None], ...] = ()
    medians: tuple[float, float] | None = None  # teacher, reference over the pair-scored documents
    score_range: tuple[float, float] | None = None
    sample_below: int = 2**64
    seed: int = 0

    def run(self, rank: int, ctx: StepContext) -> Result:
        reasons = np.zeros(len(DROP_REASONS), np.int64)
        kept_chunks = []
        last: dict[int, list[Any]] = {}
        sums = Counter[str]()
        repeats_histogram: Counter[int] = Counter()
        weights: list[float] = []
        histogram = np.zeros(HISTOGRAM_BINS, np.int64)
        regions = {name: [0, 0] for name in REGIONS}
        per_group = np.zeros((4, len(self.labels)), np.int64)  # scored, kept, repeats, tokens out
        sample: list[list[npt.NDArray[Any]]] = [[] for _ in range(7)]
        for (g, index, chunk), loaded, eligible, reason in self.chunks(rank):
            ctx.check_cancel(f"selecting (block {rank})")
            c, n = loaded.arrays, len(loaded.arrays.ok)
            key, pos = order_key(c.score), positions(g, n)
            hi, lo = hash_words(c.content_hash)
            repeats, weight = np.zeros(n, np.int64), np.zeros(n, np.float64)
            for group, soft in self.softs:
                member = eligible & in_group(loaded, group)
                if soft is not None:
                    r, w = soft.chunk(g, c.score, member, self.selection)
                    repeats[member], weight[member] = r[member], w[member]
            for group, cut in self.cuts:
                member = eligible & in_group(loaded, group)
                chosen = member if cut is None else member & before_cut(cut, key, hi, lo, pos)
                repeats[chosen], weight[chosen] = 1, 1.0
                rows = np.flatnonzero(chosen)
                if len(rows):  # the group's last kept document in rank order: its threshold
                    j = rows[np.lexsort((pos[rows], lo[rows], hi[rows], key[rows]))[-1]]
                    mine = [int(key[j]), int(hi[j]), int(lo[j]), int(pos[j]), float(c.score[j])]
                    if group not in last or mine[:4] > last[group][:4]:
                        last[group] = mine
            kept = repeats > 0
            reason[kept] = KEPT
            reasons += np.bincount(reason, minlength=len(DROP_REASONS))
            rows = np.flatnonzero(kept)
            if len(rows):
                self._write(loaded, KeptChunk(index, chunk, len(rows)), rows, repeats, weight)
                kept_chunks.append([index, chunk, len(rows)])
                weights += [float(weight[rows].min()), float(weight[rows].max())]
            values, counts = np.unique(repeats[rows], return_counts=True)
            repeats_histogram.update({int(v): int(k) for v, k in zip(values, counts, strict=True)})
            ok = c.ok
            sums.update(
                kept=len(rows),
                out_with_repeats=int(repeats.sum()),
                tokens_in=int(c.n_tokens[ok].sum()),
                tokens_kept=int(c.n_tokens[kept].sum()),
                tokens_out=int((c.n_tokens * repeats).sum()),
            )
            if loaded.group is not None:
                size = len(self.labels)
                per_group[0] += np.bincount(loaded.group[ok], minlength=size)
                per_group[1] += np.bincount(loaded.group[kept], minlength=size)
                per_group[2] += np.bincount(loaded.group, weights=repeats, minlength=size).astype(np.int64)
                per_group[3] += np.bincount(loaded.group, weights=c.n_tokens * repeats, minlength=size).astype(np.int64)
            if self.score_range is not None:
                histogram += histogram_counts(c.score[ok], *self.score_range)
            assert c.reference_logprob is not None  # load_chunk reads it
            both = pair_scored(c)
            teacher, reference = c.teacher_logprob[both], c.reference_logprob[both]
            if self.medians is not None:
                for name, mask in region_masks(teacher, reference, *self.medians).items():
                    regions[name][0] += int(mask.sum())
                    regions[name][1] += int((mask & kept[both]).sum())
            skeys = sample_key(pos[both], self.seed)
            inside = skeys < np.uint64(self.sample_below) if self.sample_below < 2**64 else np.ones(len(skeys), bool)
            group_of = loaded.group[both] if loaded.group is not None else np.full(len(skeys), -1, np.int64)
            columns = (skeys, pos[both], teacher, reference, c.score[both], kept[both], group_of)
            for part, values_ in zip(sample, columns, strict=True):
                part.append(values_[inside])
        return {
            "kept": kept_chunks,
            "reasons": reasons.tolist(),
            "sums": dict(sums),
            "repeats_histogram": {str(k): v for k, v in sorted(repeats_histogram.items())},
            "weight_range": [min(weights), max(weights)] if weights else None,
            "last": {str(k): v for k, v in sorted(last.items())},
            "groups": per_group.tolist(),
            "histogram": histogram.tolist(),
            "regions": regions,
            "sample": [pack(np.concatenate(p).astype(dt)) for p, dt in zip(sample, SAMPLE_DTYPES, strict=True)],
        }

    def _write(
        self, loaded: LoadedChunk, kept: KeptChunk, rows: npt.NDArray[np.int64],
        repeats: npt.NDArray[np.int64], weight: npt.NDArray[np.float64],
    ) -> None:
        c, table = loaded.arrays, loaded.table
        assert c.reference_logprob is not None
        columns = {
            "row": np.asarray(table.column("row").to_numpy(), dtype=np.int64)[rows],
            "text_bytes": np.asarray(table.column("text_bytes").to_numpy(), dtype=np.int64)[rows],
            "score": c.score[rows],
            "teacher_logprob": c.teacher_logprob[rows],
            "reference_logprob": c.reference_logprob[rows],
            "n_tokens": c.n_tokens[rows],
            "repeats": repeats[rows],
            "weight": weight[rows],
        }
        write_kept(self.out, self.inputs, kept, pa.table(columns).select(KEPT_SCHEMA.names))


@dataclass(frozen=True)
class Plots:
    """The two plots, from the merged figures. The passes' work files stay until the manifest is
    written (corpus/rewrite.py): a job killed after this step merges their histograms again on rerun."""

    out: JobPath
    data: PlotData
    name: str
    tasks: int = 1
    scorer: ScorerSpec | None = None

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        write_plots(self.out, self.data)
        return {}
