"""Soft selection's passes: the scale by bisection and the draw's chunk spans, from per-block sums.

    soft-totals   per block: eligible documents, their tokens, best and worst score
    soft-sums<i>  per block: the exact sums of the clipped weights at the next bisection steps'
                  midpoints (`solve_log_scale` replays plain bisection from them, BISECTION_DEPTH
                  steps a pass)
    soft-chunks   per block: per chunk, the sum of the whole repeats and the exact sum of the fractions

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

from corpus.executor.base import Result, StepContext
from corpus.sampler import Draw, exact_sum, soft_weights, solve_log_scale, sum_value
from corpus.select_distributed import SoftKeep
from corpus.steps.select import _BlockPass
from scoring.errors import ConfigError

BISECTION_DEPTH = 4  # bisection steps per pass over the chunks (15 midpoints summed per pass)

RunPass = Callable[..., list[Result]]


@dataclass(frozen=True)
class SoftTotals(_BlockPass):
    def run(self, rank: int, ctx: StepContext) -> Result:
        documents = tokens = 0
        best, worst = -math.inf, math.inf
        for _, loaded, eligible, _ in self.chunks(rank):
            c = loaded.arrays
            documents += int(eligible.sum())
            tokens += int(c.n_tokens[eligible].sum())
            if eligible.any():
                best = max(best, float(c.score[eligible].max()))
                worst = min(worst, float(c.score[eligible].min()))
        return {"documents": documents, "tokens": tokens, "best": best if documents else None, "worst": worst if documents else None}


@dataclass(frozen=True)
class SoftSums(_BlockPass):
    best: float = 0.0
    points: tuple[float, ...] = ()

    def run(self, rank: int, ctx: StepContext) -> Result:
        sums = [0] * len(self.points)
        for _, loaded, eligible, _ in self.chunks(rank):
            ctx.check_cancel(f"selecting (block {rank})")
            z = (loaded.arrays.score[eligible] - self.best) / self.selection.temperature
            for i, point in enumerate(self.points):
                sums[i] += exact_sum(soft_weights(z, point, self.selection))
        return {"sums": [str(s) for s in sums]}  # exact integers beyond JSON's safe range


@dataclass(frozen=True)
class SoftChunks(_BlockPass):
    best: float = 0.0
    log_c: float = 0.0

    def run(self, rank: int, ctx: StepContext) -> Result:
        chunks = []
        for (g, _, _), loaded, eligible, _ in self.chunks(rank):
            z = (loaded.arrays.score[eligible] - self.best) / self.selection.temperature
            w = soft_weights(z, self.log_c, self.selection)
            base = np.floor(w)
            frac = w - base
            chunks.append([g, int(base.sum()), str(exact_sum(frac)), int(np.count_nonzero(frac > 0))])
        return {"chunks": chunks}


def plan_soft(run: RunPass, chunks: int, config: Any, seed: int) -> tuple[SoftKeep | None, float | None]:
    """The keep pass's soft parameters and the scale c (None, None when no document is eligible)."""
    [*totals] = run(SoftTotals, "soft-totals")
    documents = sum(t["documents"] for t in totals)
    if not documents:
        if config.target_documents or config.target_tokens:
            raise ConfigError("no eligible documents to weight: every one was dropped by a guard or not scored")
        return None, None
    best = max(t["best"] for t in totals if t["best"] is not None)
    worst = min(t["worst"] for t in totals if t["worst"] is not None)
    target = config.target_documents if config.target_documents is not None else documents
    rounds = [0]

    def sums(points: list[float]) -> list[int]:
        results = run(SoftSums, f"soft-sums{rounds[0]}", best=best, points=tuple(points))
        rounds[0] += 1
        return [sum(int(r["sums"][i]) for r in results) for i in range(len(points))]

    z_min = (worst - best) / config.temperature
    log_c = solve_log_scale(z_min, float(documents), documents, target, config, sums, depth=BISECTION_DEPTH)
    per_chunk = [c for r in run(SoftChunks, "soft-chunks", best=best, log_c=log_c) for c in r["chunks"]]
    count = target - sum(c[1] for c in per_chunk)
    candidates = sum(c[3] for c in per_chunk)
    if count > candidates:  # only reachable through float error at the bisection's end
        raise ConfigError(f"cannot hand out {count} remainder repeats over {candidates} fractional weights")
    frac_sums = {c[0]: int(c[2]) for c in per_chunk}
    total = sum(frac_sums.values())
    last = max((g for g, s in frac_sums.items() if s > 0), default=-1)
    spans, before = [], 0
    for g in range(chunks):
        s = frac_sums.get(g, 0)
        spans.append((sum_value(before), sum_value(before + s), g == last))
        before += s
    rng = np.random.Generator(np.random.PCG64(seed))
    draw = Draw(rng.random(), sum_value(total) / count if count > 0 else 0.0, count)
    return SoftKeep(log_c, best, draw, tuple(spans)), math.exp(log_c)
