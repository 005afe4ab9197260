"""After selection, for jobs scored by a proxy or a cascade: who scored what, and the cascade's audit.

- Counts: a document the pair scored carries a teacher log-prob; one the proxy scored alone carries
  a score and no log-probs (scoring/proxy/model.py). Both are counted from the score checkpoints.
- Audit (a cascade only): the cascade ran the pair only where the proxy score was near the threshold;
  elsewhere the proxy decided alone. A seeded sample of those proxy-decided documents is scored by
  the pair here, and each is compared on one question: does the pair's score put it on the same side
  of the job's threshold as the proxy's did? That is the selection's agreement with a pair-only run,
  measured where it can differ (in the band the cascade's number *is* the pair's).

The sample is the `documents` candidates with the smallest seeded 64-bit key of their content hash:
a function of the corpus and the seed alone (not of chunking, input order or executor), found in one
pass with O(documents) memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc

from corpus.executor.base import Result, StepContext
from corpus.layout import scores_dir
from corpus.readers import read_documents
from corpus.scores import ShardScores, read_chunk_scores
from corpus.storage import JobPath
from scoring.errors import InputError
from scoring.protocols import ScorerSpec

_COLUMNS = ("row", "content_hash", "teacher_logprob", "score", "status")
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ScorerReport:
    out: JobPath
    inputs: tuple[str, ...]
    shards: tuple[tuple[int, ShardScores], ...]
    threshold: float | None  # the selection's (top-fraction: the lowest kept score)
    kept: int  # documents the selection kept
    audit_documents: int  # 0: counts only
    seed: int
    text_field: str
    id_field: str
    scorer: ScorerSpec | None = None  # the cascade, when auditing: its pair scores the sample
    name: str = "scorer-report"
    tasks: int = 1

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        by_pair = by_proxy = 0
        sample = _Sample(self.audit_documents, self.seed)
        for index, shard in self.shards:
            for chunk in range(shard.chunks):
                ctx.check_cancel("while counting scorers")
                table = read_chunk_scores(scores_dir(self.out, index, self.inputs[index]), chunk, _COLUMNS)
                ok = np.asarray(pc.equal(table.column("status"), "ok").to_numpy(zero_copy_only=False), dtype=bool)
                score = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
                teacher = np.asarray(table.column("teacher_logprob").to_numpy(zero_copy_only=False), dtype=np.float64)
                scored = ok & np.isfinite(score)
                proxy_only = scored & ~np.isfinite(teacher)
                by_pair += int((scored & ~proxy_only).sum())
                by_proxy += int(proxy_only.sum())
                if self.audit_documents and proxy_only.any():
                    rows = np.asarray(table.column("row").to_numpy(), dtype=np.int64)[proxy_only]
                    hashes = table.column("content_hash").filter(proxy_only).to_pylist()
                    sample.offer(index, rows, hashes, score[proxy_only])
        result: Result = {"documents_by_pair": by_pair, "documents_by_proxy": by_proxy}
        if self.audit_documents:
            result["audit"] = self._audit(sample, by_proxy, ctx)
        return result

    def _audit(self, sample: _Sample, population: int, ctx: StepContext) -> dict[str, Any]:
        audit: dict[str, Any] = {"seed": self.seed, "population": population, "requested": self.audit_documents}
        picked = sample.picked()
        if self.threshold is None or not picked:
            return {**audit, "documents": 0, "agreement": None, "estimated_selection_agreement": None}
        from scoring.proxy.cascade import CascadeScorer  # here: a pair job never imports the proxy

        cascade = ctx.scorer()
        if not isinstance(cascade, CascadeScorer):
            raise TypeError(f"the audit needs the job's cascade scorer, not {type(cascade).__name__}")
        texts = self._texts(picked)
        ctx.check_cancel("before the cascade's audit")
        pair_results = cascade.pair.score(texts)
        proxy_keeps = np.array([p[3] >= self.threshold for p in picked])
        pair_ok = np.array([r.ok and r.score is not None for r in pair_results])
        pair_keeps = np.array([bool(r.ok and r.score is not None and r.score >= self.threshold) for r in pair_results])
        n = int(pair_ok.sum())
        false_keeps = int((pair_ok & proxy_keeps & ~pair_keeps).sum())
        false_drops = int((pair_ok & ~proxy_keeps & pair_keeps).sum())
        # The kept set's agreement with a pair-only run, estimated: both keep `kept` documents, so the
        # pair-only run's threshold moves until the misses on the two sides balance, and the documents
        # that differ number about the larger side, scaled from the sample to the whole proxy-decided
        # population (in-band documents carry the pair's own score, and the threshold is assumed to
        # move only across documents near it). Checked against a real pair-only run in the README.
        estimate = None
        if n and self.kept:
            differ = max(false_keeps, false_drops) / n * population
            estimate = max(0.0, 1.0 - differ / self.kept)
        return {
            **audit,
            "documents": n,
            "not_scored_by_pair": len(picked) - n,
            "agreement": (n - false_keeps - false_drops) / n if n else None,
            "kept_by_proxy_dropped_by_pair": false_keeps,
            "dropped_by_proxy_kept_by_pair": false_drops,
            "estimated_selection_agreement": estimate,
        }

    def _texts(self, picked: list[tuple[int, int, bytes, float]]) -> list[str]:
        """The sample's texts, read back from the inputs and checked against their content hashes."""
        texts: dict[tuple[int, int], str] = {}
        for index in sorted({p[0] for p in picked}):
            wanted = {row: digest for i, row, digest, _ in picked if i == index}
            path = self.inputs[index]
            for row, doc in enumerate(read_documents(path, text_field=self.text_field, id_field=self.id_field)):
                if row in wanted:
                    text = doc.text or ""
                    data = text.encode("utf-8", errors="surrogatepass")
                    if hashlib.sha256(data).digest() != wanted.pop(row):
                        raise InputError(f"input {path!r} row {row} changed since it was scored")
                    texts[(index, row)] = text
                    if not wanted:
                        break
            if wanted:
                raise InputError(f"input {path!r} ended before row {min(wanted)}: it changed since it was scored")
        return [texts[(i, row)] for i, row, _, _ in picked]


class _Sample:
    """The `size` candidates with the smallest seeded key (ties: input, row), kept as they stream by."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.salt = np.uint64(_splitmix64(seed))
        self.keys = np.zeros(0, dtype=np.uint64)
        self.items: list[tuple[int, int, bytes, float]] = []

    def offer(self, index: int, rows: npt.NDArray[np.int64], hashes: list[bytes], score: npt.NDArray[np.float64]) -> None:
        prefixes = np.frombuffer(b"".join(h[:8] for h in hashes), dtype=">u8").astype(np.uint64)
        keys = _mix(prefixes ^ self.salt)
        first = np.argsort(keys, kind="stable")[: self.size]  # rows ascending: ties stay in row order
        keys, rows, score = keys[first], rows[first], score[first]
        hashes = [hashes[i] for i in first]
        items = self.items + [(index, int(r), h, float(s)) for r, h, s in zip(rows, hashes, score, strict=True)]
        all_keys = np.concatenate([self.keys, keys])
        rows_all = np.array([it[1] for it in items], dtype=np.int64)
        inputs_all = np.array([it[0] for it in items], dtype=np.int64)
        order = np.lexsort((rows_all, inputs_all, all_keys))[: self.size]
        self.keys = all_keys[order]
        self.items = [items[i] for i in order]

    def picked(self) -> list[tuple[int, int, bytes, float]]:
        """(input, row, content hash, proxy score) of the sample, in input and row order."""
        return sorted(self.items, key=lambda it: (it[0], it[1]))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser, vectorised (uint64 arithmetic wraps, as the hash needs)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
