"""Selection from per-chunk work, with driver memory O(chunks + bracket), never O(documents).

The same decisions as `corpus.sampler.select` (its in-memory oracle) for the guards and top-fraction
(a ratio or a token budget), computed from passes over chunks that a worker each can run:

1. Guards per chunk (`corpus.sampler.apply_guards`): not ok (status, non-finite score), under the teacher floor.
2. Exact duplicates: each chunk scatters (content hash, global position) of its candidates into
   `partitions` files by hash prefix; each partition is sorted on its own, and every occurrence after
   the first (lowest position) is a duplicate; each chunk then reads back its own duplicates.
3. The cut: documents rank best first by (score desc, content hash, position). A radix search over
   the score's order-preserving 64-bit key, 16 bits per pass, merges per-chunk histograms (of counts
   and of units: 1 per document, or tokens) until the bin that holds the cut has at most
   `bracket_limit` documents; those alone are gathered and ranked exactly. The first document not
   kept is the cut; a final pass keeps, per chunk, every eligible document ranked before it.

Positions are `chunk << 20 | row in chunk` (chunks hold at most 2^20 rows), in fixed chunk order, so
ties break exactly as the oracle breaks them by index. Soft selection still runs in memory
(corpus/steps/select_memory.py): see the module notes in README ("Selection at scale").
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from corpus.config import SelectionConfig
from corpus.sampler import DROP_REASONS, DUPLICATE, KEPT, apply_guards
from scoring.errors import ConfigError

ROW_BITS = 20
DIGIT_BITS = 16
_DIGITS = 1 << DIGIT_BITS
_DEDUP_DTYPE = np.dtype([("hi", ">u8"), ("lo", ">u8"), ("pos", "<i8")])


@dataclass(frozen=True)
class ChunkArrays:
    """One chunk's selection inputs (what corpus/steps/select_memory.py loads for all chunks)."""

    score: npt.NDArray[np.float64]
    teacher_logprob: npt.NDArray[np.float64]
    n_tokens: npt.NDArray[np.int64]
    ok: npt.NDArray[np.bool_]  # status == "ok"
    content_hash: npt.NDArray[np.bytes_]  # S16 prefixes, as the oracle uses them


ChunkLoader = Callable[[int], ChunkArrays]


@dataclass
class ChunkSelection:
    repeats: npt.NDArray[np.int64]
    weight: npt.NDArray[np.float64]
    reason: npt.NDArray[np.uint8]


@dataclass
class CutResult:
    """What the driver holds: O(1) plus per-reason counts."""

    threshold: float | None
    dropped: dict[str, int] = field(default_factory=dict)
    bracket: int = 0  # documents ranked exactly
    passes: int = 0  # radix passes over the chunks


def order_key(score: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    """uint64 keys whose ascending order is descending score (best first); +0.0 and -0.0 tie."""
    s = np.where(score == 0.0, 0.0, score)  # -0.0 -> +0.0, as the oracle's float compare sees them
    bits = s.view(np.uint64)
    ascending = np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63))
    return ~ascending


def _hash_words(content_hash: npt.NDArray[np.bytes_]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    raw = np.frombuffer(np.ascontiguousarray(content_hash, dtype="S16").tobytes(), dtype=">u8").reshape(-1, 2)
    return raw[:, 0].astype(np.uint64), raw[:, 1].astype(np.uint64)


def _guards(config: SelectionConfig, c: ChunkArrays) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
    return apply_guards(config, score=c.score, teacher_logprob=c.teacher_logprob, ok=c.ok)


class DistributedSelection:
    """Runs the passes over `chunks` chunks read by `load`; `work` holds the dedup partitions."""

    def __init__(
        self,
        config: SelectionConfig,
        load: ChunkLoader,
        chunks: int,
        work: Path,
        *,
        partitions: int = 16,
        bracket_limit: int = 1 << 20,
    ) -> None:
        if config.method != "top-fraction":
            raise ConfigError(f"method={config.method!r} is selected in memory (corpus.sampler.select)")
        self.config, self.load, self.chunks, self.work = config, load, chunks, work
        self.partitions, self.bracket_limit = partitions, bracket_limit

    # -------------------------------------------------------------------------------- per chunk

    def eligible(self, i: int, c: ChunkArrays) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
        eligible, reason = _guards(self.config, c)
        if self.config.drop_duplicates:
            dup = self._duplicates_of(i, len(c.score)) & eligible
            reason[dup] = DUPLICATE
            eligible &= ~dup
        return eligible, reason

    def _scatter(self, i: int) -> None:
        c = self.load(i)
        eligible, _ = _guards(self.config, c)
        hi, lo = _hash_words(c.content_hash)
        rows = np.flatnonzero(eligible)
        part = (hi[rows] >> np.uint64(64 - 8)).astype(np.int64) * self.partitions // 256
        for p in range(self.partitions):
            take = rows[part == p]
            out = np.empty(len(take), dtype=_DEDUP_DTYPE)
            out["hi"], out["lo"], out["pos"] = hi[take], lo[take], (i << ROW_BITS) | take
            np.save(self.work / f"p{p:04d}-c{i:07d}.npy", out)

    def _reduce_partition(self, p: int) -> None:
        parts = [np.load(self.work / f"p{p:04d}-c{i:07d}.npy") for i in range(self.chunks)]
        entries = np.concatenate(parts) if parts else np.empty(0, _DEDUP_DTYPE)
        entries = entries[np.lexsort((entries["pos"], entries["lo"], entries["hi"]))]
        same = (entries["hi"][1:] == entries["hi"][:-1]) & (entries["lo"][1:] == entries["lo"][:-1])
        np.save(self.work / f"dups-{p:04d}.npy", np.sort(entries["pos"][1:][same]))
        for i in range(self.chunks):
            (self.work / f"p{p:04d}-c{i:07d}.npy").unlink()

    def _duplicates_of(self, i: int, n: int) -> npt.NDArray[np.bool_]:
        dup = np.zeros(n, dtype=bool)
        lo, hi = i << ROW_BITS, (i + 1) << ROW_BITS
        for p in range(self.partitions):
            positions = np.load(self.work / f"dups-{p:04d}.npy", mmap_mode="r")
            a, b = np.searchsorted(positions, [lo, hi])
            dup[np.asarray(positions[a:b]) - lo] = True
        return dup

    # -------------------------------------------------------------------------------- the passes

    def _chunk_views(self) -> Iterator[tuple[int, ChunkArrays, npt.NDArray[np.bool_], npt.NDArray[np.uint64]]]:
        for i in range(self.chunks):
            c = self.load(i)
            eligible, _ = self.eligible(i, c)
            yield i, c, eligible, order_key(c.score)

    def _units(self, c: ChunkArrays) -> npt.NDArray[np.int64]:
        return c.n_tokens if self.config.keep_tokens is not None else np.ones(len(c.score), np.int64)

    def find_cut(self) -> tuple[tuple[int, int, int, int] | None, CutResult]:
        """The first document (rank key) not kept, or None when every eligible one is kept."""
        if self.config.drop_duplicates:
            self.work.mkdir(parents=True, exist_ok=True)
            for i in range(self.chunks):
                self._scatter(i)
            for p in range(self.partitions):
                self._reduce_partition(p)
        result = CutResult(threshold=None)
        prefix, level, above = 0, 0, 0  # keys matching `prefix` in their top 16*level bits
        target: int | None = None
        while True:
            counts = np.zeros(_DIGITS, np.int64)
            units = np.zeros(_DIGITS, np.int64)
            shift = 64 - DIGIT_BITS * (level + 1)
            for _, c, eligible, key in self._chunk_views():
                inside = eligible if level == 0 else eligible & ((key >> np.uint64(shift + DIGIT_BITS)) == prefix)
                digits = ((key[inside] >> np.uint64(shift)) & np.uint64(_DIGITS - 1)).astype(np.int64)
                counts += np.bincount(digits, minlength=_DIGITS)
                units += np.bincount(digits, weights=self._units(c)[inside], minlength=_DIGITS).astype(np.int64)
            result.passes += 1
            if target is None:
                target = self._target(int(counts.sum()), int(units.sum()))
            cum = above + np.cumsum(units)
            d = int(np.searchsorted(cum, target, side="right"))  # first digit whose prefix exceeds the target
            if d == _DIGITS:
                return None, result  # everything (still in the bracket) fits
            above = int(cum[d - 1]) if d else above
            prefix = (prefix << DIGIT_BITS) | d
            level += 1
            if counts[d] <= self.bracket_limit or level == 64 // DIGIT_BITS:
                break
        return self._exact(prefix, 64 - DIGIT_BITS * level, above, target, result), result

    def _target(self, eligible: int, units: int) -> int:
        if self.config.keep_tokens is not None:
            if self.config.keep_tokens > units:
                raise ConfigError(
                    f"keep_tokens={self.config.keep_tokens} exceeds the {units} tokens of the {eligible} eligible documents"
                )
            return self.config.keep_tokens
        return math.ceil(round(self.config.effective_ratio * eligible, 9))

    def _exact(self, prefix: int, shift: int, above: int, target: int, result: CutResult) -> tuple[int, int, int, int]:
        keys, his, los, positions, units = [], [], [], [], []
        for i, c, eligible, key in self._chunk_views():
            inside = np.flatnonzero(eligible & ((key >> np.uint64(shift)) == prefix))
            hi, lo = _hash_words(c.content_hash[inside])
            keys.append(key[inside])
            his.append(hi)
            los.append(lo)
            positions.append((i << ROW_BITS) | inside)
            units.append(self._units(c)[inside])
        k, h, lw, pos, u = (np.concatenate(a) for a in (keys, his, los, positions, units))
        order = np.lexsort((pos, lw, h, k))
        cum = above + np.cumsum(u[order])
        m = int(np.searchsorted(cum, target, side="right"))
        result.bracket = len(k)
        j = order[m]
        return int(k[j]), int(h[j]), int(lw[j]), int(pos[j])

    def select_chunk(self, i: int, cut: tuple[int, int, int, int] | None) -> tuple[ChunkSelection, tuple[tuple[int, int, int, int], float] | None]:
        """The final pass for chunk `i`: the oracle's repeats, weights and reasons for its rows, and
        its last kept document in rank order (rank key, score): the job's threshold is the last one's."""
        c = self.load(i)
        eligible, reason = self.eligible(i, c)
        key = order_key(c.score)
        hi, lo = _hash_words(c.content_hash)
        pos = (i << ROW_BITS) | np.arange(len(key), dtype=np.int64)
        if cut is None:
            kept = eligible
        else:
            k0, h0, l0, p0 = (np.uint64(cut[0]), np.uint64(cut[1]), np.uint64(cut[2]), cut[3])
            before = (key < k0) | (
                (key == k0) & ((hi < h0) | ((hi == h0) & ((lo < l0) | ((lo == l0) & (pos < p0)))))
            )
            kept = eligible & before
        reason[kept] = KEPT
        last = None
        rows = np.flatnonzero(kept)
        if len(rows):
            j = rows[np.lexsort((pos[rows], lo[rows], hi[rows], key[rows]))[-1]]
            last = ((int(key[j]), int(hi[j]), int(lo[j]), int(pos[j])), float(c.score[j]))
        return ChunkSelection(kept.astype(np.int64), kept.astype(np.float64), reason), last

    def run(self, on_chunk: Callable[[int, ChunkSelection], None]) -> CutResult:
        cut, result = self.find_cut()
        counts = np.zeros(len(DROP_REASONS), np.int64)
        last: tuple[tuple[int, int, int, int], float] | None = None
        for i in range(self.chunks):
            sel, chunk_last = self.select_chunk(i, cut)
            counts += np.bincount(sel.reason, minlength=len(DROP_REASONS))
            if chunk_last is not None and (last is None or chunk_last[0] > last[0]):
                last = chunk_last
            on_chunk(i, sel)
        result.threshold = None if last is None else last[1]
        result.dropped = {DROP_REASONS[r]: int(n) for r, n in enumerate(counts) if r != KEPT and n}
        if self.config.drop_duplicates:
            shutil.rmtree(self.work, ignore_errors=True)
        return result
