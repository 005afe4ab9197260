"""Scores -> per-document weights and integer repeat counts. Pure, seeded and exact.

Two methods (MiniPLM, Gu et al. 2025):
- `top-fraction` (Difference Sampling, the default): keep the top `ratio` of documents by score, or,
  with `keep_tokens`, the highest-scoring documents while their tokens fit the budget. Kept documents
  get weight 1 and one repeat. Ties are broken by content hash, so the choice does not depend on the
  order the inputs were listed in.
- `soft`: weight_i = clip(c * exp(score_i / temperature), min_weight, max_weight), with c solved so
  that the expected total (documents, or tokens) is the target; each weight is the document's
  expected repeat count. Repeats are floor(weight) plus one more for exactly the right number of
  documents, drawn by seeded systematic sampling in chunk order with inclusion probability
  frac(weight) (so that it runs over chunks: corpus/steps/select.py): easy
  documents are down-weighted (and sometimes dropped) rather than only cut, hard ones repeated.

Guards, applied first with either method: documents whose status is not ok, documents whose teacher
log-prob is under a floor (text even the teacher finds implausible: noise), and exact duplicates
(same content hash: the first occurrence is kept). A document scored by a proxy has a score but no
teacher log-prob: it is selected on its score like any other, and a teacher floor refuses it (see
`apply_guards`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus.config import SelectionConfig
from corpus.stratify import strata
from scoring.errors import ConfigError

# Why a document got zero repeats (index into DROP_REASONS); KEPT for the others.
KEPT, NOT_OK, BELOW_TEACHER_FLOOR, DUPLICATE, NOT_SELECTED = range(5)
DROP_REASONS = ("kept", "not_ok", "below_teacher_floor", "duplicate", "not_selected")

HASH_BYTES = 16  # content-hash prefix kept per document: ample for duplicates, half the memory
SUM_SCALE = 1126  # exact sums count units of 2**-1126: the smallest float64 mantissa bit



@dataclass
class Selection:
    """Per-document results, aligned with the inputs, and what decided them."""

    weight: npt.NDArray[np.float64]
    repeats: npt.NDArray[np.int64]
    reason: npt.NDArray[np.uint8]  # KEPT or why dropped
    threshold: float | None  # top-fraction: the lowest kept score (None when nothing is kept, or soft)
    scale: float | None = None  # soft: the solved c
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> documents
    strata: dict[str, dict[str, Any]] | None = None  # stratified: per group, what decided it


def hash_prefix(hex_digests: list[str]) -> npt.NDArray[np.bytes_]:
    """Content hashes (hex sha256) as fixed-width byte strings, the sampler's tie-break and duplicate key."""
    return np.array([bytes.fromhex(h[: 2 * HASH_BYTES]) for h in hex_digests], dtype=f"S{HASH_BYTES}")


def select(
    config: SelectionConfig,
    *,
    score: npt.ArrayLike,
    teacher_logprob: npt.ArrayLike,
    n_tokens: npt.ArrayLike,
    ok: npt.ArrayLike,
    content_hash: npt.ArrayLike,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
    chunk_starts: Sequence[int] = (0,),
) -> Selection:
    """Weights and repeats for every document. Scores of not-ok documents are ignored (may be NaN).

    `groups` (a label per document) is required when the config stratifies: the guards still apply
    corpus-wide (a duplicate across groups is a duplicate), then each group is selected on its own.
    `chunk_starts`: where each stored chunk of the documents begins (soft selection's repeats are
    drawn from per-chunk prefix sums, so that the chunks can be drawn from one at a time; a stratum
    is drawn over the same chunks, from its own members in each)."""
    score_a = np.asarray(score, dtype=np.float64)
    teacher_a = np.asarray(teacher_logprob, dtype=np.float64)
    tokens_a = np.asarray(n_tokens, dtype=np.int64)
    ok_a = np.asarray(ok, dtype=bool)
    hash_a = np.asarray(content_hash)
    n = len(score_a)
    if not all(len(a) == n for a in (teacher_a, tokens_a, ok_a, hash_a)):
        raise ValueError("score, teacher_logprob, n_tokens, ok and content_hash must have one length")

    eligible, reason = apply_guards(config, score=score_a, teacher_logprob=teacher_a, ok=ok_a)
    if config.drop_duplicates:
        dup = eligible & ~_first_occurrences(hash_a, eligible)
        reason[dup] = DUPLICATE
        eligible &= ~dup

    idx = np.flatnonzero(eligible)
    strata_out = None
    if config.stratify_by is not None:
        if groups is None:
            raise ValueError(f"stratify_by={config.stratify_by!r} needs a group label per document")
        labels = np.asarray(groups)
        if len(labels) != n:
            raise ValueError("groups must have one label per document")
        weight, repeats, strata_out = _stratified(config, idx, labels, score_a, tokens_a, hash_a, n, seed, chunk_starts)
        threshold = scale = None
    elif config.method == "top-fraction":
        weight, repeats, threshold, scale = _top_fraction(config, idx, score_a, tokens_a, hash_a, n)
    else:
        weight, repeats, scale = _soft(config, idx, score_a, tokens_a, n, seed, chunk_starts)
        threshold = None
    reason[repeats > 0] = KEPT
    dropped = {
        DROP_REASONS[r]: int(c) for r, c in enumerate(np.bincount(reason, minlength=5)) if r != KEPT and c
    }
    return Selection(weight, repeats, reason, threshold, scale, dropped, strata_out)


def _stratified(
    config: SelectionConfig,
    idx: npt.NDArray[np.int64],
    labels: npt.NDArray[Any],
    score: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.int64],
    hashes: npt.NDArray[np.bytes_],
    n: int,
    seed: int,
    chunk_starts: Sequence[int],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], dict[str, dict[str, Any]]]:
    """Each group's eligible documents selected with that group's config (corpus/stratify.py)."""
    names, inverse = np.unique(labels[idx], return_inverse=True)
    # Each group's members in corpus order (a stable sort), without a pass over all per group.
    members = (
        np.split(idx[np.argsort(inverse, kind="stable")], np.cumsum(np.bincount(inverse))[:-1]) if len(idx) else []
    )
    parts = strata(
        config,
        seed,
        [str(x) for x in names],
        [len(m) for m in members],
        [int(tokens[m].sum()) for m in members],
    )
    by_label = dict(zip((str(x) for x in names), members, strict=True))
    weight = np.zeros(n, dtype=np.float64)
    repeats = np.zeros(n, dtype=np.int64)
    record: dict[str, dict[str, Any]] = {}
    for part in parts:
        member = by_label[part.label]
        # The group alone, in its own positions: ranks and draws see only its documents.
        local = np.arange(len(member), dtype=np.int64)
        s, t, h, m = score[member], tokens[member], hashes[member], len(member)
        info: dict[str, Any] = {"eligible_documents": part.documents, "eligible_tokens": part.tokens}
        if part.quota is not None:
            info["quota"] = part.quota
        if config.method == "top-fraction":
            w, r, threshold, _ = _top_fraction(part.config, local, s, t, h, m)
            info["threshold"] = threshold
        elif part.quota == 0:  # nothing to hand out: no scale to solve (min_weight may be > 0)
            w, r = np.zeros(m, dtype=np.float64), np.zeros(m, dtype=np.int64)
            info["soft_scale"] = None
        else:
            # Drawn chunk by chunk as a whole corpus is: the chunks' starts among the group's members.
            starts = np.searchsorted(member, np.asarray(chunk_starts, dtype=np.int64))
            w, r, scale = _soft(part.config, local, s, t, m, part.seed, [int(x) for x in starts])
            info["soft_scale"] = scale
        weight[member], repeats[member] = w, r
        info["kept_documents"] = int(np.count_nonzero(r))
        info["repeats"] = int(r.sum())
        info["tokens_out"] = int((r * t).sum())
        record[part.label] = info
    return weight, repeats, record


def apply_guards(
    config: SelectionConfig,
    *,
    score: npt.NDArray[np.float64],
    teacher_logprob: npt.NDArray[np.float64],
    ok: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
    """The guards before deduplication (eligible mask, and NOT_OK / BELOW_TEACHER_FLOOR where they
    drop; NOT_SELECTED elsewhere), shared by `select` and the distributed selection.

    A document is usable when its status is ok and its score finite (a not-ok one may carry any
    placeholder). Its teacher log-prob may be missing (NaN): a proxy scored it, and no LM ran. The
    teacher floor is defined on the teacher's log-prob alone, so it refuses such documents by name
    rather than guessing whether they would have cleared it (rewrite jobs refuse a floor with a
    proxy or a cascade before anything runs).
    """
    reason = np.full(len(score), NOT_SELECTED, dtype=np.uint8)
    usable = ok & np.isfinite(score)
    reason[~usable] = NOT_OK
    eligible = usable.copy()
    if config.min_teacher_logprob is not None:
        missing = int((eligible & ~np.isfinite(teacher_logprob)).sum())
        if missing:
            raise ConfigError(
                f"min_teacher_logprob={config.min_teacher_logprob} needs the teacher's log-prob of every "
                f"document, but {missing} were scored by a proxy (no teacher log-prob): drop the floor, "
                "or score with the pair"
            )
        low = eligible & (teacher_logprob < config.min_teacher_logprob)
        reason[low] = BELOW_TEACHER_FLOOR
        eligible &= ~low
    return eligible, reason


def _first_occurrences(
    hashes: npt.NDArray[np.bytes_], eligible: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    idx = np.flatnonzero(eligible)
    first = np.zeros(len(hashes), dtype=bool)
    if len(idx):
        _, where = np.unique(hashes[idx], return_index=True)  # index of the first occurrence of each
        first[idx[where]] = True
    return first


def rank_by_score(
    idx: npt.NDArray[np.int64], score: npt.NDArray[np.float64], hashes: npt.NDArray[np.bytes_]
) -> npt.NDArray[np.int64]:
    """`idx` ordered best first: score descending, then content hash, then position (all deterministic)."""
    order = np.lexsort((idx, hashes[idx], -score[idx]))
    return idx[order]


def _top_fraction(
    config: SelectionConfig,
    idx: npt.NDArray[np.int64],
    score: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.int64],
    hashes: npt.NDArray[np.bytes_],
    n: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], float | None, None]:
    ranked = rank_by_score(idx, score, hashes)
    if config.keep_tokens is not None:
        total = int(tokens[idx].sum())
        if config.keep_tokens > total:
            raise ConfigError(
                f"keep_tokens={config.keep_tokens} exceeds the {total} tokens of the {len(idx)} eligible documents"
            )
        # The longest best-first prefix that fits: every kept score stays >= every dropped one.
        keep = int(np.searchsorted(np.cumsum(tokens[ranked]), config.keep_tokens, side="right"))
    else:
        # round() first so that e.g. 0.7 * 10 = 7.000000000000001 keeps 7, not 8.
        keep = math.ceil(round(config.effective_ratio * len(idx), 9))
    chosen = ranked[:keep]
    weight = np.zeros(n, dtype=np.float64)
    repeats = np.zeros(n, dtype=np.int64)
    weight[chosen] = 1.0
    repeats[chosen] = 1
    threshold = float(score[chosen[-1]]) if keep else None
    return weight, repeats, threshold, None


def _soft_units(
    config: SelectionConfig, idx: npt.NDArray[np.int64], tokens: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], int]:
    """What one repeat of each eligible document counts towards the target, and the target."""
    if config.target_tokens is not None:
        return tokens[idx].astype(np.float64), config.target_tokens
    target = config.target_documents if config.target_documents is not None else len(idx)
    return np.ones(len(idx), dtype=np.float64), target


def exact_sum(values: npt.NDArray[np.float64]) -> int:
    """The exact sum of finite non-negative floats, as an integer count of 2**-SUM_SCALE: sums of
    parts add up to the sum of the whole, whatever the parts (chunks, workers), bit for bit."""
    total = 0
    for start in range(0, len(values), 1 << 20):  # per-exponent partial sums stay below 2**53
        mantissa, exponent = np.frexp(values[start : start + (1 << 20)])
        ints = (mantissa * 2.0**53).astype(np.int64)  # exact: value = ints * 2**(exponent - 53)
        if not len(ints):
            continue
        low = int(exponent.min())
        bins = exponent - low
        high_sums = np.bincount(bins, weights=(ints >> 26).astype(np.float64))  # integers < 2**53: exact
        low_sums = np.bincount(bins, weights=(ints & ((1 << 26) - 1)).astype(np.float64))
        for k in np.flatnonzero(high_sums + low_sums):
            part = (int(high_sums[k]) << 26) + int(low_sums[k])
            total += part << (int(k) + low - 53 + SUM_SCALE)
    return total


def sum_value(total: int) -> float:
    """An `exact_sum`, correctly rounded to a float."""
    return total / (1 << SUM_SCALE)


def soft_weights(z: npt.NDArray[np.float64], log_c: float, config: SelectionConfig) -> npt.NDArray[np.float64]:
    return np.clip(np.exp(np.minimum(log_c + z, 700.0)), config.min_weight, config.max_weight)


def solve_log_scale(
    z_min: float,
    units_sum: float,
    documents: int,
    target: int,
    config: SelectionConfig,
    totals: Callable[[list[float]], list[int]],
    depth: int = 1,
) -> float:
    """log c such that sum(clip(exp(log c + z), lo, hi) * units) == target (monotone in c: bisection).

    `totals(points)` gives the exact sums (`exact_sum`) at several log c at once: each call answers
    the next `depth` bisection steps (their 2**depth - 1 possible midpoints), so that over chunks a
    pass of reductions serves several steps; the steps taken are those of plain bisection."""
    steps = bisect_log_scale(z_min, units_sum, documents, target, config, depth)
    points = next(steps)
    while True:
        try:
            points = steps.send(totals(points))
        except StopIteration as done:
            return float(done.value)


def bisect_log_scale(
    z_min: float, units_sum: float, documents: int, target: int, config: SelectionConfig, depth: int = 1
) -> Generator[list[float], list[int], float]:
    """`solve_log_scale` as a generator: yields the points it needs the exact sums at, is sent them,
    returns log c. Several of them (one per group) then share each pass over the chunks."""
    lo_w, hi_w = config.min_weight, config.max_weight
    reachable_lo, reachable_hi = lo_w * units_sum, hi_w * units_sum
    what = "target_tokens" if config.target_tokens is not None else "target_documents"
    if not (reachable_lo <= target <= reachable_hi):
        raise ConfigError(
            f"{what}={target} is out of reach with weights in [min_weight={lo_w}, max_weight={hi_w}] over "
            f"{documents} eligible documents (reachable: {reachable_lo:g} to {reachable_hi:g})"
        )
    # z <= 0 with max 0: at log c = log(hi) the best document already sits at max_weight; at the
    # other end every document is at min_weight (or 0) once log c + max(z)... is far below.
    upper = math.log(hi_w) - z_min + 1.0
    lower = math.log(hi_w) - 800.0
    steps = 0
    while True:
        points: list[float] = []
        frontier = [(lower, upper)]
        for _ in range(depth):
            points += [0.5 * (lo + hi) for lo, hi in frontier]
            frontier = [pair for lo, hi in frontier for pair in ((lo, 0.5 * (lo + hi)), (0.5 * (lo + hi), hi))]
        totals = yield points
        value = dict(zip(points, (sum_value(t) for t in totals), strict=True))
        for _ in range(depth):
            mid = 0.5 * (lower + upper)
            if value[mid] < target:
                lower = mid
            else:
                upper = mid
            steps += 1
            if upper - lower < 1e-13 or steps == 200:
                return upper


def _soft(
    config: SelectionConfig,
    idx: npt.NDArray[np.int64],
    score: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.int64],
    n: int,
    seed: int,
    chunk_starts: Sequence[int],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], float | None]:
    weight = np.zeros(n, dtype=np.float64)
    repeats = np.zeros(n, dtype=np.int64)
    if not len(idx):
        if config.target_documents or config.target_tokens:
            raise ConfigError(
                "no eligible documents to weight: every one was dropped by a guard or not scored"
            )
        return weight, repeats, None
    units, target = _soft_units(config, idx, tokens)
    z = (score[idx] - score[idx].max()) / config.temperature
    log_c = solve_log_scale(
        float(z.min()), float(units.sum()), len(idx), target, config,
        lambda points: [exact_sum(soft_weights(z, p, config) * units) for p in points],
    )
    w = soft_weights(z, log_c, config)
    base = np.floor(w).astype(np.int64)
    frac = w - base
    rng = np.random.Generator(np.random.PCG64(seed))
    # The eligible documents of each chunk, in order: the systematic draw's per-chunk prefix sums.
    bounds = np.searchsorted(idx, np.asarray([*chunk_starts[1:]], dtype=np.int64))
    pieces = np.split(frac, bounds)
    if config.target_tokens is None:
        extra = np.concatenate(systematic_draw(pieces, target - int(base.sum()), rng.random()))
    else:
        extra = _token_draw(
            pieces, units.astype(np.int64), target - int((base * units.astype(np.int64)).sum()), rng
        )
    weight[idx] = w
    repeats[idx] = base + extra
    # c is reported relative to the best document's score: weight_i = clip(c * exp((s_i - max s) / t)).
    return weight, repeats, math.exp(log_c)


@dataclass(frozen=True)
class Draw:
    """Where the systematic draw's points fall: p_j = (u + j) * step for 0 <= j < count, over the
    fractional weights laid end to end in chunk order (a chunk covers [offset, end))."""

    u: float
    step: float
    count: int

    def chunk_extras(self, frac: npt.NDArray[np.float64], offset: float, end: float, last: bool) -> npt.NDArray[np.int64]:
        """One extra repeat for each document of this chunk that a point falls on."""
        extra = np.zeros(len(frac), dtype=np.int64)
        if self.count <= 0 or not len(frac):
            return extra
        j = np.arange(
            max(0, math.floor(offset / self.step - self.u) - 2),
            min(self.count, math.ceil(end / self.step - self.u) + 3) if not last else self.count,
        )
        p = (self.u + j) * self.step
        p = p[(p >= offset) & ((p < end) | last)]
        if not len(p):
            return extra
        cum = np.cumsum(frac)
        hits = np.searchsorted(cum, p - offset, side="right")
        positive = np.flatnonzero(frac > 0)
        if not len(positive):
            raise ConfigError(f"cannot hand out {len(p)} remainder repeats in a chunk with no fractional weight")
        hits = np.minimum(hits, positive[-1])  # a point at the very end (float error) takes the last
        # Float error can put two points on one document (a fraction within 1e-12 of 1); then a
        # neighbour takes the hit.
        hits = _unique_hits(hits, frac)
        extra[hits] = 1
        return extra


def systematic_draw(pieces: list[npt.NDArray[np.float64]], count: int, u: float) -> list[npt.NDArray[np.int64]]:
    """Exactly `count` documents get one extra repeat; document i with probability frac[i].

    Systematic sampling in chunk order: points u, u+1, ..., u+count-1 (scaled by sum(frac) / count,
    which float error alone keeps from 1) on the cumulative fractions, where a chunk's cumulative
    fractions start at the exact sum of the chunks before it. Each chunk's hits need only its own
    fractions and that offset, so chunks are drawn from one at a time, anywhere."""
    candidates = sum(int(np.count_nonzero(f > 0)) for f in pieces)
    if count > candidates:  # only reachable through float error at the bisection's end
        raise ConfigError(f"cannot hand out {count} remainder repeats over {candidates} fractional weights")
    sums = [exact_sum(f) for f in pieces]
    total = sum_value(sum(sums))
    draw = Draw(u, total / count if count > 0 else 0.0, count)
    out, before = [], 0
    last = max((i for i, s in enumerate(sums) if s > 0), default=-1)  # takes points past the end
    for i, (f, s) in enumerate(zip(pieces, sums, strict=True)):
        out.append(draw.chunk_extras(f, sum_value(before), sum_value(before + s), i == last))
        before += s
    return out


def _unique_hits(hits: npt.NDArray[np.int64], f: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    if len(np.unique(hits)) == len(hits):
        return hits
    taken = set()
    out = []
    free = (i for i in np.argsort(-f, kind="stable") if f[i] > 0)
    for h in hits.tolist():
        if h in taken:
            h = next(i for i in free if i not in taken)
        taken.add(h)
        out.append(h)
    return np.asarray(out, dtype=np.int64)


def _token_draw(
    pieces: list[npt.NDArray[np.float64]], units: npt.NDArray[np.int64], budget: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Extra repeats worth at most `budget` tokens, short of it by less than one document.

    A token total cannot in general be hit exactly (it is a subset sum), so: a systematic draw as for
    documents, then drawn documents are given back from the last one backwards (chunk order) while
    over budget, and undrawn ones added from the first one on while they fit. Both walks are in
    chunk order, so that over chunks they need per-chunk sums and a few chunks' rows (select_soft.py).
    """
    frac = np.concatenate(pieces)
    count = token_draw_count(pieces, units)
    extra = np.concatenate(systematic_draw(pieces, count, rng.random())) if count else np.zeros(len(frac), np.int64)
    used = int((extra * units).sum())
    for i in np.flatnonzero(extra)[::-1]:
        if used <= budget:
            break
        extra[i] = 0
        used -= int(units[i])
    for i in np.flatnonzero((extra == 0) & (frac > 0)):
        if used + units[i] <= budget:
            extra[i] = 1
            used += int(units[i])
    return extra


def token_draw_count(pieces: list[npt.NDArray[np.float64]], units: npt.NDArray[np.int64]) -> int:
    """How many extra repeats a token target's systematic draw hands out: the fractions' exact sum,
    rounded (none when no fraction carries a token)."""
    frac = np.concatenate(pieces) if pieces else np.zeros(0)
    if not ((frac > 0) & (units > 0)).any():
        return 0
    return min(round(sum_value(sum(exact_sum(f) for f in pieces))), int(np.count_nonzero(frac > 0)))
