"""Selection at corpus scale without models: driver memory, wall time, and exactness vs the oracle.

    python bench/selection.py --docs 1000000 --check          # equal to corpus.sampler.select?
    python bench/selection.py --docs 100000000                # peak RSS of the distributed run

Chunks of synthetic scores are generated from a seed per chunk (score rounded to 0.001 so that
ties are common, 3% not ok, a teacher spread for the floor, content hashes drawn with repeats so
that ~5% are duplicates): the same chunk comes back identical on every pass, as a score file would,
without 100M documents on disk. Each mode runs in a fresh subprocess so that its peak RSS
(ru_maxrss) is its own. The distributed passes run in that one process, one chunk at a time, so its
figure is the driver's plus one worker's chunk: an upper bound of the driver alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from corpus.config import SelectionConfig
from corpus.select_distributed import ChunkArrays, DistributedSelection

_M = np.uint64(0xBF58476D1CE4E5B9)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def make_chunk(i: int, rows: int, docs: int, seed: int) -> ChunkArrays:
    rng = np.random.default_rng([seed, i])
    ident = rng.integers(0, max(1, int(docs * 0.95)), rows, dtype=np.uint64)  # equal ids: duplicates
    words = np.stack([_mix(ident), _mix(ident ^ np.uint64(0x9E3779B97F4A7C15))], axis=1).astype(">u8")
    return ChunkArrays(
        score=np.round(rng.normal(0.0, 0.5, rows), 3),
        teacher_logprob=rng.normal(-3.0, 0.7, rows),
        n_tokens=rng.integers(20, 2000, rows),
        ok=rng.random(rows) > 0.03,
        content_hash=np.frombuffer(words.tobytes(), dtype="S16"),
    )


def chunk_sizes(docs: int, rows: int) -> list[int]:
    return [min(rows, docs - start) for start in range(0, docs, rows)]


def run_mode(mode: str, docs: int, rows: int, config: SelectionConfig, seed: int) -> dict:
    sizes = chunk_sizes(docs, rows)

    def load(i: int) -> ChunkArrays:
        return make_chunk(i, sizes[i], docs, seed)

    started = time.perf_counter()
    if mode == "oracle":
        from corpus.sampler import select

        parts = [load(i) for i in range(len(sizes))]
        joined = {n: np.concatenate([getattr(c, n) for c in parts]) for n in ChunkArrays.__dataclass_fields__}
        del parts
        sel = select(config, **joined)
        kept_digest = _digest(sel.repeats)
        out = {"threshold": sel.threshold, "dropped": sel.dropped, "kept": int(sel.repeats.sum())}
    else:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as work:
            kept_parts: list[np.ndarray] = []
            dist = DistributedSelection(config, load, len(sizes), Path(work) / "dedup")
            result = dist.run(lambda _i, s: kept_parts.append(np.packbits(s.repeats > 0)) if docs <= 10**7 else None)
        kept_digest = _digest(np.concatenate([np.unpackbits(p)[: sizes[i]] for i, p in enumerate(kept_parts)]).astype(np.int64)) if kept_parts else None
        out = {"threshold": result.threshold, "dropped": result.dropped, "bracket": result.bracket, "passes": result.passes}
        out["kept"] = docs - sum(result.dropped.values())
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["kept_digest"] = kept_digest
    return out


def _digest(repeats: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(repeats, dtype=np.int64).tobytes()).hexdigest()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--chunk-rows", type=int, default=1 << 20)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--min-teacher-logprob", type=float, default=-4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="also run the in-memory oracle and compare")
    p.add_argument("--mode", choices=["oracle", "distributed"], help=argparse.SUPPRESS)
    args = p.parse_args()
    config = SelectionConfig(ratio=args.ratio, min_teacher_logprob=args.min_teacher_logprob)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.docs, args.chunk_rows, config, args.seed)))
        return 0
    modes = ["distributed", "oracle"] if args.check else ["distributed"]
    results = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--mode", mode, "--docs", str(args.docs), "--chunk-rows", str(args.chunk_rows)]
        cmd += ["--ratio", str(args.ratio), "--min-teacher-logprob", str(args.min_teacher_logprob), "--seed", str(args.seed)]
        results[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        r = results[mode]
        print(
            f"{mode:<12} {args.docs:>12,} docs  wall {r['seconds']:8.1f}s  peak RSS {r['peak_rss_bytes'] / 2**20:8.1f} MiB"
            f"  = {r['peak_rss_bytes'] / args.docs:8.1f} B/doc  kept {r['kept']:,}  threshold {r['threshold']}"
            + (f"  (bracket {r['bracket']:,} docs, {r['passes']} radix passes)" if mode == "distributed" else "")
        )
    if args.check:
        d, o = results["distributed"], results["oracle"]
        same = d["kept_digest"] == o["kept_digest"] and d["threshold"] == o["threshold"] and d["dropped"] == o["dropped"]
        print(f"distributed == oracle (every decision, threshold, drop counts): {'yes' if same else 'NO'}")
        if not same:
            return 1
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores, numpy {np.__version__}; chunk_rows={args.chunk_rows}; shared and loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
