"""Step 2, in one process: the whole corpus's scores in memory, `corpus.sampler.select` over them.

~73 bytes per document at rest and a few times that while selecting, so this is for corpora that fit
one machine's memory, and it is the oracle the distributed selection (corpus/steps/select.py) is
tested against. It writes what the distributed one writes: per-chunk kept files, plots, and a report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
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
from corpus.report import build_report, write_plots
from corpus.sampler import HASH_BYTES, select
from corpus.scores import SCORES_SCHEMA, ShardScores, read_chunk_scores
from corpus.selection_files import KEPT_SCHEMA, KeptChunk, write_kept
from corpus.steps.groups import read_labels
from scoring.protocols import ScorerSpec

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


@dataclass(frozen=True)
class SelectInMemory:
    out: Path
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
        report = build_report(
            ok=arrays["ok"],
            not_scored=not_scored,
            score=arrays["score"],
            n_tokens=arrays["n_tokens"],
            repeats=sel.repeats,
            weight=sel.weight,
            dropped=sel.dropped,
            threshold=sel.threshold,
            selection={**self.selection.record(), "seed": self.seed, "soft_scale": sel.scale},
        )
        if sel.strata is not None:
            report["strata"] = sel.strata
        report["diagnostics"] = pair_diagnostics(
            teacher_logprob=arrays["teacher_logprob"],
            reference_logprob=arrays["reference_logprob"],
            score=arrays["score"],
            ok=arrays["ok"],
            repeats=sel.repeats,
            groups=groups,
            stratified=self.selection.stratify_by is not None,
        )
        write_plots(
            self.out,
            score=arrays["score"],
            teacher_logprob=arrays["teacher_logprob"],
            reference_logprob=arrays["reference_logprob"],
            ok=arrays["ok"],
            kept=sel.repeats > 0,
            threshold=sel.threshold,
            seed=self.seed,
            diagnostics=report["diagnostics"],
        )
        return {"kept": kept_chunks, "report": report}


def load_arrays(
    out: Path, inputs: tuple[str, ...], shards: tuple[tuple[int, ShardScores], ...]
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
    out: Path, inputs: tuple[str, ...], field: str, chunks: list[tuple[tuple[int, int], tuple[int, int]]]
) -> npt.NDArray[np.str_]:
    """The group labels of every scored chunk (corpus/steps/groups.py), aligned with `load_arrays`."""
    labels = [read_labels(out, field, index, inputs[index], chunk) for (index, chunk), _ in chunks]
    column = pa.chunked_array(labels, pa.string())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)


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
