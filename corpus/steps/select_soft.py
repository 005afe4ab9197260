"""Soft selection's passes: the scale by bisection and the draw's chunk spans, from per-block sums.

    totals        per block: eligible documents, their tokens, best and worst score (per group)
    soft-sums<i>  per block: the exact sums of the clipped weights at the next bisection steps'
                  midpoints (`bisect_log_scale` replays plain bisection from them, BISECTION_DEPTH
                  steps a pass; when stratified, every group's bisection shares each pass)
    soft-chunks   per block: per chunk (and group), the sum of the whole repeats and the exact sum
                  of the fractions

Exact sums (corpus.sampler.exact_sum) add up the same over any split into blocks, so the scale and
the draw are the in-memory oracle's (corpus.sampler.select given the same chunk starts).
Soft selection with a token target runs in memory (corpus/steps/select_memory.py): its give-back
and fill-up walk one seeded order over every document.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from corpus.config import SelectionConfig
from corpus.executor.base import Result, StepContext
from corpus.sampler import Draw, bisect_log_scale, exact_sum, soft_weights, sum_value
from corpus.select_distributed import SoftKeep
from corpus.steps.select import _BlockPass, in_group
from scoring.errors import ConfigError

BISECTION_DEPTH = 4  # bisection steps per pass over the chunks (15 midpoints summed per pass)

RunPass = Callable[..., list[Result]]


@dataclass(frozen=True)
class Totals(_BlockPass):
    """Per group (or one row, -1, for the corpus): eligible documents, their tokens, best and worst score."""

    def run(self, rank: int, ctx: StepContext) -> Result:
        groups = range(len(self.labels)) if self.selection.stratify_by is not None else (-1,)
        rows = {k: [0, 0, -math.inf, math.inf] for k in groups}
        for _, loaded, eligible, _ in self.chunks(rank):
            c = loaded.arrays
            for k, row in rows.items():
                member = eligible & in_group(loaded, k)
                if member.any():
                    row[0] += int(member.sum())
                    row[1] += int(c.n_tokens[member].sum())
                    row[2] = max(row[2], float(c.score[member].max()))
                    row[3] = min(row[3], float(c.score[member].min()))
        return {"totals": [[k, *row] for k, row in rows.items() if row[0]]}


@dataclass(frozen=True)
class SoftSums(_BlockPass):
    """The exact sums of the clipped weights of each (group, best score, log c) asked."""

    points: tuple[tuple[int, float, float], ...] = ()

    def run(self, rank: int, ctx: StepContext) -> Result:
        sums = [0] * len(self.points)
        for _, loaded, eligible, _ in self.chunks(rank):
            ctx.check_cancel(f"selecting (block {rank})")
            z: dict[int, Any] = {}
            for i, (group, best, point) in enumerate(self.points):
                if group not in z:
                    member = eligible & in_group(loaded, group)
                    z[group] = (loaded.arrays.score[member] - best) / self.selection.temperature
                sums[i] += exact_sum(soft_weights(z[group], point, self.selection))
        return {"sums": [str(s) for s in sums]}  # exact integers beyond JSON's safe range


@dataclass(frozen=True)
class SoftChunks(_BlockPass):
    """Per (group, chunk): the sum of the whole repeats and the exact sum of the fractions."""

    scales: tuple[tuple[int, float, float], ...] = ()  # group, best score, log c

    def run(self, rank: int, ctx: StepContext) -> Result:
        chunks = []
        for (g, _, _), loaded, eligible, _ in self.chunks(rank):
            for group, best, log_c in self.scales:
                member = eligible & in_group(loaded, group)
                w = soft_weights((loaded.arrays.score[member] - best) / self.selection.temperature, log_c, self.selection)
                base = np.floor(w)
                frac = w - base
                chunks.append([group, g, int(base.sum()), str(exact_sum(frac)), int(np.count_nonzero(frac > 0))])
        return {"chunks": chunks}


@dataclass(frozen=True)
class SoftPart:
    """One soft selection to solve: the corpus's (group -1), or a group's when stratified."""

    group: int
    documents: int  # eligible
    best: float
    worst: float
    target: int
    seed: int


def plan_soft(
    run: RunPass, chunks: int, config: SelectionConfig, parts: list[SoftPart]
) -> dict[int, tuple[SoftKeep, float]]:
    """Each part's keep rule and scale c, all bisections sharing each pass over the chunks."""
    solving = {
        p.group: bisect_log_scale(
            (p.worst - p.best) / config.temperature, float(p.documents), p.documents, p.target, config, BISECTION_DEPTH
        )
        for p in parts
    }
    asked = {group: next(steps) for group, steps in solving.items()}
    best = {p.group: p.best for p in parts}
    log_c: dict[int, float] = {}
    rounds = 0
    while asked:
        points = tuple((group, best[group], x) for group, xs in asked.items() for x in xs)
        results = run(SoftSums, f"soft-sums{rounds}", points=points)
        rounds += 1
        sums = [sum(int(r["sums"][i]) for r in results) for i in range(len(points))]
        offset = 0
        for group, xs in list(asked.items()):
            mine, offset = sums[offset : offset + len(xs)], offset + len(xs)
            try:
                asked[group] = solving[group].send(mine)
            except StopIteration as done:
                log_c[group] = float(done.value)
                del asked[group]
    scales = tuple((p.group, p.best, log_c[p.group]) for p in parts)
    per_chunk: dict[int, list[list[Any]]] = {p.group: [] for p in parts}
    for r in run(SoftChunks, "soft-chunks", scales=scales):
        for c in r["chunks"]:
            per_chunk[c[0]].append(c)
    out = {}
    for p in parts:
        rows = per_chunk[p.group]
        count = p.target - sum(c[2] for c in rows)
        candidates = sum(c[4] for c in rows)
        if count > candidates:  # only reachable through float error at the bisection's end
            raise ConfigError(f"cannot hand out {count} remainder repeats over {candidates} fractional weights")
        frac_sums = {c[1]: int(c[3]) for c in rows}
        total = sum(frac_sums.values())
        last = max((g for g, s in frac_sums.items() if s > 0), default=-1)
        spans, before = [], 0
        for g in range(chunks):
            s = frac_sums.get(g, 0)
            spans.append((sum_value(before), sum_value(before + s), g == last))
            before += s
        rng = np.random.Generator(np.random.PCG64(p.seed))
        draw = Draw(rng.random(), sum_value(total) / count if count > 0 else 0.0, count)
        out[p.group] = (SoftKeep(log_c[p.group], p.best, draw, tuple(spans)), math.exp(log_c[p.group]))
    return out
