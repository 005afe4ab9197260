"""Soft selection's passes: the scale by bisection and the draw's chunk spans, from per-block sums.

    totals        per block: eligible documents, their tokens, best and worst score (per group)
    soft-sums<i>  per block: the exact sums of the clipped weights at the next bisection steps'
                  midpoints (`bisect_log_scale` replays plain bisection from them, BISECTION_DEPTH
                  steps a pass; when stratified, every group's bisection shares each pass)
    soft-chunks   per block: per chunk (and group), the sum of the whole repeats and the exact sum
                  of the fractions

Exact sums (corpus.sampler.exact_sum) add up the same over any split into blocks, so the scale and
the draw are the in-memory oracle's (corpus.sampler.select given the same chunk starts).
With a token target, two more:

    soft-drawn    per block: per chunk, the drawn extras' tokens and the fewest tokens of a
                  document that could take one
    soft-fill     one task: the give-back and fill-up walks in chunk order (corpus.sampler._token_draw),
                  reading only the chunks where the walks act; returns the positions they change
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus.config import SelectionConfig
from corpus.executor.base import Result, StepContext
from corpus.sampler import Draw, bisect_log_scale, exact_sum, soft_weights, sum_value
from corpus.select_distributed import ROW_BITS, SoftKeep, pack, unpack
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
            units: dict[int, Any] = {}
            for i, (group, best, point) in enumerate(self.points):
                if group not in z:
                    member = eligible & in_group(loaded, group)
                    z[group] = (loaded.arrays.score[member] - best) / self.selection.temperature
                    units[group] = _units(self.selection, loaded.arrays.n_tokens[member])
                sums[i] += exact_sum(soft_weights(z[group], point, self.selection) * units[group])
        return {"sums": [str(s) for s in sums]}  # exact integers beyond JSON's safe range


@dataclass(frozen=True)
class SoftChunks(_BlockPass):
    """Per (group, chunk): the units of the whole repeats (documents or tokens), the exact sum of the
    fractions, how many are not 0, and whether one of those carries a token."""

    scales: tuple[tuple[int, float, float], ...] = ()  # group, best score, log c

    def run(self, rank: int, ctx: StepContext) -> Result:
        chunks = []
        for (g, _, _), loaded, eligible, _ in self.chunks(rank):
            for group, best, log_c in self.scales:
                member = eligible & in_group(loaded, group)
                w = soft_weights((loaded.arrays.score[member] - best) / self.selection.temperature, log_c, self.selection)
                base = np.floor(w)
                frac = w - base
                tokens = loaded.arrays.n_tokens[member]
                units = int((base.astype(np.int64) * tokens).sum()) if self.selection.target_tokens is not None else int(base.sum())
                carries = bool(((frac > 0) & (tokens > 0)).any())
                chunks.append([group, g, units, str(exact_sum(frac)), int(np.count_nonzero(frac > 0)), carries])
        return {"chunks": chunks}


@dataclass(frozen=True)
class SoftPart:
    """One soft selection to solve: the corpus's (group -1), or a group's when stratified."""

    group: int
    documents: int  # eligible
    tokens: int  # theirs
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
            (p.worst - p.best) / config.temperature,
            float(p.tokens if config.target_tokens is not None else p.documents),
            p.documents, p.target, config, BISECTION_DEPTH,
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
    budgets = {}
    for p in parts:
        rows = per_chunk[p.group]
        frac_sums = {c[1]: int(c[3]) for c in rows}
        total = sum(frac_sums.values())
        candidates = sum(c[4] for c in rows)
        if config.target_tokens is not None:  # as corpus.sampler.token_draw_count
            budgets[p.group] = p.target - sum(c[2] for c in rows)
            count = min(round(sum_value(total)), candidates) if any(c[5] for c in rows) else 0
        else:
            count = p.target - sum(c[2] for c in rows)
        if count > candidates:  # only reachable through float error at the bisection's end
            raise ConfigError(f"cannot hand out {count} remainder repeats over {candidates} fractional weights")
        last = max((g for g, s in frac_sums.items() if s > 0), default=-1)
        spans, before = [], 0
        for g in range(chunks):
            s = frac_sums.get(g, 0)
            spans.append((sum_value(before), sum_value(before + s), g == last))
            before += s
        rng = np.random.Generator(np.random.PCG64(p.seed))
        draw = Draw(rng.random(), sum_value(total) / count if count > 0 else 0.0, count)
        out[p.group] = (SoftKeep(log_c[p.group], p.best, draw, tuple(spans)), math.exp(log_c[p.group]))
    if budgets:
        return fit_token_budgets(run, chunks, out, budgets)
    return out


def _units(config: SelectionConfig, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """What one repeat of each document counts towards the target (as corpus.sampler._soft_units)."""
    return tokens.astype(np.float64) if config.target_tokens is not None else np.ones(len(tokens), np.float64)


@dataclass(frozen=True)
class SoftDrawn(_BlockPass):
    """Per (group, chunk) of a token target: the drawn extras' tokens, and the fewest tokens of a
    document with a fraction (any; not drawn): the give-back and fill-up walks' per-chunk sums."""

    keeps: tuple[tuple[int, SoftKeep], ...] = ()

    def run(self, rank: int, ctx: StepContext) -> Result:
        chunks = []
        for (g, _, _), loaded, eligible, _ in self.chunks(rank):
            for group, keep in self.keeps:
                idx, w, base, extra = keep.drawn(g, loaded.arrays.score, eligible & in_group(loaded, group), self.selection)
                tokens = loaded.arrays.n_tokens[idx]
                candidate = w - base > 0
                undrawn = candidate & (extra == 0)
                chunks.append([
                    group, g, int((extra * tokens).sum()),
                    int(tokens[candidate].min()) if candidate.any() else None,
                    int(tokens[undrawn].min()) if undrawn.any() else None,
                ])
        return {"chunks": chunks}


@dataclass(frozen=True)
class TokenWalk:
    """One token target's walks (corpus.sampler._token_draw) over the chunks, from per-chunk sums."""

    group: int
    keep: SoftKeep
    budget: int
    drawn: tuple[int, ...]  # per chunk: the drawn extras' tokens
    fewest: tuple[int | None, ...]  # per chunk: fewest tokens of a document with a fraction
    fewest_undrawn: tuple[int | None, ...]


@dataclass(frozen=True)
class SoftFill(_BlockPass):
    """One task, in chunk order: the give-back from the last drawn document backwards while over
    budget, then the fill-up from the first undrawn one while they fit. Per-chunk sums say which
    chunks it must read: the one where the give-back stops, and those holding a document that fits."""

    walks: tuple[TokenWalk, ...] = ()

    @property
    def tasks(self) -> int:
        return 1

    def run(self, rank: int, ctx: StepContext) -> Result:
        where = {g: (index, chunk) for block in self.blocks for g, index, chunk in block}
        dups = self.duplicates()
        out = []
        for walk in self.walks:
            ctx.check_cancel("selecting (token target)")
            cutoff, dropped, taken = self.walk(walk, where, dups)
            out.append([walk.group, cutoff, pack(np.sort(np.asarray(dropped, np.int64))), pack(np.asarray(taken, np.int64))])
        return {"walks": out}

    def walk(
        self, walk: TokenWalk, where: dict[int, tuple[int, int]], dups: list[npt.NDArray[np.int64]]
    ) -> tuple[int | None, list[int], list[int]]:
        def rows(g: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
            loaded, eligible, _ = self.load(g, *where[g], dups)
            idx, w, base, extra = walk.keep.drawn(g, loaded.arrays.score, eligible & in_group(loaded, walk.group), self.selection)
            return idx, loaded.arrays.n_tokens[idx], w - base, extra

        used, cutoff, dropped = sum(walk.drawn), None, []
        if used > walk.budget:
            cutoff = -1  # every chunk gives back, unless the walk stops inside one
            for g in reversed(range(len(walk.drawn))):
                if used - walk.drawn[g] > walk.budget:
                    used -= walk.drawn[g]
                    continue
                idx, tokens, _, extra = rows(g)
                for i in np.flatnonzero(extra)[::-1]:
                    if used <= walk.budget:
                        break
                    used -= int(tokens[i])
                    dropped.append((g << ROW_BITS) | int(idx[i]))
                cutoff = g
                break
        taken = []
        for g in range(len(walk.drawn)):
            fewest = walk.fewest[g] if cutoff is not None and g >= cutoff else walk.fewest_undrawn[g]
            if fewest is None or used + fewest > walk.budget:
                continue
            idx, tokens, frac, extra = rows(g)
            if cutoff is not None and g > cutoff:
                extra[:] = 0
            extra[np.isin((g << ROW_BITS) | idx, dropped)] = 0
            for i in np.flatnonzero((extra == 0) & (frac > 0)):
                if used + tokens[i] <= walk.budget:
                    used += int(tokens[i])
                    taken.append((g << ROW_BITS) | int(idx[i]))
        return cutoff, dropped, taken


def fit_token_budgets(
    run: RunPass, chunks: int, keeps: dict[int, tuple[SoftKeep, float]], budgets: dict[int, int]
) -> dict[int, tuple[SoftKeep, float]]:
    """The keep rules of token targets, with the walks' adjustments to the draw."""
    drawn: dict[int, list[int]] = {k: [0] * chunks for k in keeps}
    fewest: dict[int, list[int | None]] = {k: [None] * chunks for k in keeps}
    fewest_undrawn: dict[int, list[int | None]] = {k: [None] * chunks for k in keeps}
    for r in run(SoftDrawn, "soft-drawn", keeps=tuple((k, keep) for k, (keep, _) in keeps.items())):
        for group, g, tokens, low, low_undrawn in r["chunks"]:
            drawn[group][g], fewest[group][g], fewest_undrawn[group][g] = tokens, low, low_undrawn
    walks = tuple(
        TokenWalk(k, keep, budgets[k], tuple(drawn[k]), tuple(fewest[k]), tuple(fewest_undrawn[k]))
        for k, (keep, _) in keeps.items()
    )
    [filled] = run(SoftFill, "soft-fill", walks=walks)
    out = {}
    for group, cutoff, dropped, taken in filled["walks"]:
        keep, scale = keeps[group]
        out[group] = (
            replace(keep, cutoff=cutoff, dropped=tuple(unpack(dropped, np.int64).tolist()), taken=tuple(unpack(taken, np.int64).tolist())),
            scale,
        )
    return out
