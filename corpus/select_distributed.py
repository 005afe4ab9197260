"""Selection from per-chunk work: the pure pieces the select steps (corpus/steps/select.py) run.

Every function here either works on one chunk's arrays (what a worker does) or merges what the
chunks returned (what the driver does), so the driver holds O(chunks + bracket), never O(documents).
The decisions equal `corpus.sampler.select`, the in-memory oracle:

- Guards per chunk (`corpus.sampler.apply_guards`): not ok (status, non-finite score), under the teacher floor.
- Exact duplicates: each block scatters (content hash, position) of its candidates into partition
  files by hash prefix; each partition is sorted on its own and every occurrence after the first
  (lowest position) is a duplicate; each chunk reads its own duplicates back.
- Order statistics by radix select over an order-preserving 64-bit key, `LEVEL_BITS` per pass: the
  blocks return histograms of the keys under the prefix found so far (counts, and units: documents
  or tokens), the driver merges them and descends into the bin holding the wanted rank until that
  bin holds at most `BRACKET_LIMIT` documents, which are then gathered and ranked exactly. The
  top-fraction cut is one such query (ranked by score desc, content hash, position, in units); the
  report's score quantiles and the diagnostics' medians are others (in documents).

Positions are `chunk << ROW_BITS | row in chunk` (chunks hold at most 2^20 rows), in fixed chunk
order, so ties break exactly as the oracle breaks them by index.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from corpus.config import SelectionConfig
from corpus.sampler import (
    DUPLICATE,
    Draw,
    apply_guards,
    soft_weights,
)
from scoring.errors import ConfigError

ROW_BITS = 20
LEVEL_BITS = (12, 12, 12, 12, 16)  # 12: a block's histogram stays small; the last level ends the key
BRACKET_LIMIT = 1 << 16  # documents a query's last bin may hold before they are gathered
DEDUP_DTYPE = np.dtype([("hi", ">u8"), ("lo", ">u8"), ("pos", "<i8")])
SAMPLE_SIZE = 100_000  # documents the rank correlations and the scatter plot are computed over
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class ChunkArrays:
    """One chunk's selection inputs, aligned by row."""

    score: npt.NDArray[np.float64]
    teacher_logprob: npt.NDArray[np.float64]
    n_tokens: npt.NDArray[np.int64]
    ok: npt.NDArray[np.bool_]  # status == "ok"
    content_hash: npt.NDArray[np.bytes_]  # S16 prefixes, as the oracle uses them
    reference_logprob: npt.NDArray[np.float64] | None = None


# ------------------------------------------------------------------------------------ keys


def order_key(score: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    """uint64 keys whose ascending order is descending score (best first); +0.0 and -0.0 tie."""
    s = np.where(score == 0.0, 0.0, score)  # -0.0 -> +0.0, as the oracle's float compare sees them
    bits = np.ascontiguousarray(s, dtype=np.float64).view(np.uint64)
    ascending = np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63))
    return ~ascending


def key_value(key: int) -> float:
    """The score whose `order_key` is `key`."""
    ascending = ~key & (2**64 - 1)
    bits = ascending & ~(1 << 63) if ascending >> 63 else ~ascending & (2**64 - 1)
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def hash_words(content_hash: npt.NDArray[np.bytes_]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    raw = np.frombuffer(np.ascontiguousarray(content_hash, dtype="S16").tobytes(), dtype=">u8").reshape(-1, 2)
    return raw[:, 0].astype(np.uint64), raw[:, 1].astype(np.uint64)


def positions(chunk: int, n: int) -> npt.NDArray[np.int64]:
    return (chunk << ROW_BITS) | np.arange(n, dtype=np.int64)


def sample_key(pos: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.uint64]:
    """A seeded hash of each position (splitmix64): the sample is the documents with the lowest keys,
    so it is the same whichever blocks, workers or executor computed it."""
    with np.errstate(over="ignore"):
        x = pos.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def sample_bound(scored: int) -> int:
    """Keys below this are gathered (a few more than SAMPLE_SIZE expected; all when few are scored)."""
    if scored <= SAMPLE_SIZE:
        return 2**64
    return min(2**64, int(2**64 * 1.25 * SAMPLE_SIZE / scored))


# ------------------------------------------------------------------------------------ guards, dedup


def guards(config: SelectionConfig, c: ChunkArrays) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
    """Eligible before the duplicate guard, and the reason of each row that is not (the oracle's rule)."""
    return apply_guards(config, score=c.score, teacher_logprob=c.teacher_logprob, ok=c.ok)


def scatter_entries(c: ChunkArrays, eligible: npt.NDArray[np.bool_], chunk: int, partitions: int) -> list[npt.NDArray[Any]]:
    """(hash, position) of the chunk's candidates, one array per hash-prefix partition."""
    hi, lo = hash_words(c.content_hash)
    rows = np.flatnonzero(eligible)
    part = (hi[rows] >> np.uint64(56)).astype(np.int64) * partitions // 256
    out = []
    for p in range(partitions):
        take = rows[part == p]
        entries = np.empty(len(take), dtype=DEDUP_DTYPE)
        entries["hi"], entries["lo"], entries["pos"] = hi[take], lo[take], (chunk << ROW_BITS) | take
        out.append(entries)
    return out


def duplicate_positions(entries: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Sorted positions of every occurrence after the first of a hash, within one partition."""
    entries = entries[np.lexsort((entries["pos"], entries["lo"], entries["hi"]))]
    same = (entries["hi"][1:] == entries["hi"][:-1]) & (entries["lo"][1:] == entries["lo"][:-1])
    return np.sort(entries["pos"][1:][same]).astype(np.int64)


def mark_duplicates(
    reason: npt.NDArray[np.uint8], eligible: npt.NDArray[np.bool_], chunk: int, dups: list[npt.NDArray[np.int64]]
) -> None:
    """Drops the chunk's rows listed in any partition's sorted duplicate positions (in place)."""
    lo, hi = chunk << ROW_BITS, (chunk + 1) << ROW_BITS
    for positions_ in dups:
        a, b = np.searchsorted(positions_, [lo, hi])
        rows = np.asarray(positions_[a:b]) - lo
        rows = rows[eligible[rows]]
        reason[rows] = DUPLICATE
        eligible[rows] = False


# ------------------------------------------------------------------------------------ radix select


Probe = tuple[str, str, str, int, int, int]  # column, subset, units, level, prefix, group


@dataclass
class Query:
    """Finds the document at unit position `target` (0-based) in ascending key order of a subset.

    `column`: "score", "teacher" or "reference"; `subset`: "eligible" or "ok"; `units`: "docs" or
    "tokens"; `group`: the subset within one group (its index among the job's labels), -1 for all.
    `above` counts the units of the subset before the current prefix's bin."""

    column: str
    subset: str
    units: str = "docs"
    group: int = -1
    target: int | None = None
    prefix: int = 0
    level: int = 0
    above: int = 0
    done: bool = False
    beyond: bool = False  # the target lies past the last document (all of the subset fit)
    bin_count: int = 0

    @property
    def probe(self) -> Probe:
        return (self.column, self.subset, self.units, self.level, self.prefix, self.group)

    @property
    def shift(self) -> int:
        """Bits of the key below the prefix."""
        return 64 - sum(LEVEL_BITS[: self.level])




def level_digits(key: npt.NDArray[np.uint64], level: int) -> npt.NDArray[np.int64]:
    shift = 64 - sum(LEVEL_BITS[: level + 1])
    return ((key >> np.uint64(shift)) & np.uint64((1 << LEVEL_BITS[level]) - 1)).astype(np.int64)


def under_prefix(key: npt.NDArray[np.uint64], level: int, prefix: int) -> npt.NDArray[np.bool_]:
    shift = 64 - sum(LEVEL_BITS[:level])
    if shift == 64:
        return np.ones(len(key), dtype=bool)
    return (key >> np.uint64(shift)) == np.uint64(prefix)


def descend(q: Query, counts: npt.NDArray[np.int64], units: npt.NDArray[np.int64]) -> None:
    """One level of `q` from the merged histogram of its probe."""
    assert q.target is not None
    cum = q.above + np.cumsum(units)
    d = int(np.searchsorted(cum, q.target, side="right"))  # first digit whose prefix passes the target
    if d == len(cum):
        q.done = q.beyond = True
        return
    q.above = int(cum[d - 1]) if d else q.above
    q.prefix = (q.prefix << LEVEL_BITS[q.level]) | d
    q.level += 1
    q.bin_count = int(counts[d])
    q.done = q.bin_count <= BRACKET_LIMIT or q.level == len(LEVEL_BITS)


def cut_target(config: SelectionConfig, eligible: int, tokens: int) -> int:
    """The unit position of the first document not kept (the oracle's `keep`)."""
    if config.keep_tokens is not None:
        if config.keep_tokens > tokens:
            raise ConfigError(
                f"keep_tokens={config.keep_tokens} exceeds the {tokens} tokens of the {eligible} eligible documents"
            )
        return config.keep_tokens
    # round() first so that e.g. 0.7 * 10 = 7.000000000000001 keeps 7, not 8 (as the oracle).
    return int(np.ceil(round(config.effective_ratio * eligible, 9)))


def exact_cut(
    above: int, target: int, key: npt.NDArray[np.uint64], hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64],
    pos: npt.NDArray[np.int64], units: npt.NDArray[np.int64],
) -> tuple[int, int, int, int]:
    """The rank key (key, hash hi, hash lo, position) of the first document not kept, from the
    gathered bracket (every eligible document of the cut's bin)."""
    order = np.lexsort((pos, lo, hi, key))
    cum = above + np.cumsum(units[order])
    j = order[int(np.searchsorted(cum, target, side="right"))]
    return int(key[j]), int(hi[j]), int(lo[j]), int(pos[j])


def before_cut(
    cut: tuple[int, int, int, int], key: npt.NDArray[np.uint64], hi: npt.NDArray[np.uint64],
    lo: npt.NDArray[np.uint64], pos: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    k0, h0, l0, p0 = np.uint64(cut[0]), np.uint64(cut[1]), np.uint64(cut[2]), cut[3]
    return (key < k0) | ((key == k0) & ((hi < h0) | ((hi == h0) & ((lo < l0) | ((lo == l0) & (pos < p0))))))


# ------------------------------------------------------------------------------------ exact figures


def numpy_quantiles(n: int, qs: tuple[float, ...], order_stat: dict[int, float]) -> list[float]:
    """What `np.quantile(values, qs)` (method "linear") returns for `n` values, from the order
    statistics it reads (`quantile_ranks`): the same indices, weights and lerp, op for op."""
    vi = (n - 1) * np.asarray(qs, dtype=np.float64)
    prev, nxt = quantile_indices(n, vi)
    gamma = np.asarray(vi - prev, dtype=vi.dtype)
    a = np.array([order_stat[int(i) % n] for i in prev])
    b = np.array([order_stat[int(i) % n] for i in nxt])
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return [float(v) for v in out]


def quantile_indices(n: int, vi: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    prev = np.floor(vi)
    nxt = prev + 1
    above = vi >= n - 1
    prev[above] = -1
    nxt[above] = -1
    return prev.astype(np.intp), nxt.astype(np.intp)


def quantile_ranks(n: int, qs: tuple[float, ...]) -> list[int]:
    """The 0-based ascending ranks `numpy_quantiles` needs."""
    prev, nxt = quantile_indices(n, (n - 1) * np.asarray(qs, dtype=np.float64))
    return sorted({int(i) % n for i in (*prev, *nxt)})


def median_ranks(n: int) -> list[int]:
    return [n // 2] if n % 2 else [n // 2 - 1, n // 2]


def numpy_median(n: int, order_stat: dict[int, float]) -> float:
    """`np.median` of `n` values: the middle one, or the mean of the two middle ones."""
    ranks = median_ranks(n)
    return float(np.mean(np.array([order_stat[r] for r in ranks])))


# ------------------------------------------------------------------------------------ soft


@dataclass(frozen=True)
class SoftKeep:
    """What the keep pass needs to give each chunk's eligible documents their soft weights and
    repeats: the solved scale, the best eligible score, and the draw's span of each chunk (in job
    order: where its cumulative fractions start and end, and whether it takes points past the end).

    A token target then adjusts the draw (corpus.sampler._token_draw): every chunk after `cutoff`
    gives its draw back, as do the rows `dropped` of chunk `cutoff`; the rows `taken` are added
    (positions, sorted)."""

    log_c: float
    best: float
    draw: Draw
    spans: tuple[tuple[float, float, bool], ...]
    cutoff: int | None = None
    dropped: tuple[int, ...] = ()
    taken: tuple[int, ...] = ()

    def drawn(
        self, g: int, score: npt.NDArray[np.float64], member: npt.NDArray[np.bool_], config: SelectionConfig
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The member rows of chunk `g`, their weights, whole repeats and the systematic draw's extras."""
        idx = np.flatnonzero(member)
        w = soft_weights((score[idx] - self.best) / config.temperature, self.log_c, config)
        base = np.floor(w).astype(np.int64)
        return idx, w, base, self.draw.chunk_extras(w - base, *self.spans[g])

    def chunk(
        self, g: int, score: npt.NDArray[np.float64], eligible: npt.NDArray[np.bool_], config: SelectionConfig
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        idx, w, base, extra = self.drawn(g, score, eligible, config)
        if self.cutoff is not None and g > self.cutoff:
            extra[:] = 0
        extra[rows_in(idx, g, self.dropped if g == self.cutoff else ())] = 0
        extra[rows_in(idx, g, self.taken)] = 1
        repeats = np.zeros(len(score), np.int64)
        weight = np.zeros(len(score), np.float64)
        repeats[idx] = base + extra
        weight[idx] = w
        return repeats, weight


def rows_in(idx: npt.NDArray[np.int64], g: int, sorted_positions: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Where chunk `g`'s listed positions sit in `idx` (its member rows, ascending; each listed one is a member)."""
    if not sorted_positions:
        return np.empty(0, np.int64)
    listed = np.asarray(sorted_positions, dtype=np.int64)
    a, b = np.searchsorted(listed, [g << ROW_BITS, (g + 1) << ROW_BITS])
    return np.searchsorted(idx, listed[a:b] - (g << ROW_BITS)).astype(np.int64)


# ------------------------------------------------------------------------------------ transport


def pack(array: npt.NDArray[Any]) -> str:
    """An array as text for a task's JSON result (its dtype is the reader's to know)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 1)).decode()


def unpack(text: str, dtype: Any) -> npt.NDArray[Any]:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype)

