"""The job's select steps at corpus scale, without models: driver memory, wall time, and exactness.

    python bench/selection.py --docs 1000000 --check      # the steps' output == the in-memory oracle's?
    python bench/selection.py --docs 10000000 --workers 2 # driver peak RSS, wall, bytes per document
    python bench/selection.py --groups 8 --check          # stratified by 8 groups of unequal size
    python bench/selection.py --method soft --target-tokens 100000000 --check   # soft, a token target

Synthetic scores chunk files are written first (tests/corpus/synthetic_scores.py: coarse scores with
many ties, ~5% not scored, ~10% duplicate hashes), in a subprocess of their own. Then the job's
selection (`corpus.steps.select_run.run_selection`, exactly what `reweigh rewrite` runs after scoring)
runs in a fresh subprocess whose tasks go to a pool of worker processes, so that the driver's peak RSS
(ru_maxrss of its own process) is the driver's alone; the workers' peak is printed beside it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.config import SelectionConfig
from corpus.executor.base import Executor, Result, Step, StepContext, StepProgressFn, run_task
from corpus.scores import ShardScores
from corpus.steps.select_run import run_selection
from scoring.hardware import cpu_description
from scoring.protocols import ScorerSpec
from tests.corpus.select_oracle import SelectInMemory
from tests.corpus.synthetic_scores import write_synthetic_labels, write_synthetic_scores


def _task(out: Path, step: Step, rank: int) -> Result:
    return run_task(out, step, rank, StepContext())


class PoolExecutor(Executor):
    """Runs a step's tasks on a pool of worker processes (what the Ray executor does on a cluster)."""

    def __init__(self, workers: int) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def run(
        self, out: Path, step: Step, *, progress: StepProgressFn | None = None, cancel: threading.Event | None = None
    ) -> list[Result]:
        return list(self.pool.map(_task, [out] * step.tasks, [step] * step.tasks, range(step.tasks)))

    def fingerprint(self, spec: ScorerSpec) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        self.pool.shutdown()


def inputs_of(docs: int, per_input: int) -> tuple[list[str], list[int]]:
    rows = [min(per_input, docs - start) for start in range(0, docs, per_input)]
    return [f"in-{i:04d}.jsonl" for i in range(len(rows))], rows


def _shards(out: Path) -> tuple[tuple[int, ShardScores], ...]:
    return tuple((i, ShardScores(**s)) for i, s in json.loads((out / "shards.json").read_text()))


GROUP_FIELD = "source"


def group_labels(groups: int) -> list[str]:
    return [f"g{i:02d}" for i in range(groups)]


def generate(out: Path, docs: int, per_input: int, chunk_docs: int, seed: int, groups: int) -> None:
    inputs, rows = inputs_of(docs, per_input)
    shards = write_synthetic_scores(out, inputs, rows, chunk_docs, seed=seed, decimals=3)
    if groups:
        write_synthetic_labels(out, GROUP_FIELD, shards, chunk_docs, group_labels(groups), seed=seed)
    (out / "shards.json").write_text(json.dumps([[i, s.__dict__] for i, s in shards]))


def select(
    out: Path, mode: str, config: SelectionConfig, chunk_docs: int, per_input: int, workers: int, seed: int, groups: int
) -> dict[str, Any]:
    shards = _shards(out)
    inputs = tuple(inputs_of(sum(s.rows for _, s in shards), per_input)[0])
    field = GROUP_FIELD if groups else None
    started = time.perf_counter()
    if mode == "oracle":
        result = SelectInMemory(out, inputs, shards, config, seed, field).run(0, StepContext())
    else:
        executor = PoolExecutor(workers)
        try:
            result = run_selection(
                executor, out, inputs, shards, chunk_docs, config, seed, name="select-bench",
                group_field=field, labels=tuple(sorted(group_labels(groups))),
            )
        finally:
            executor.close()
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for path in sorted((out / "selection").rglob("*.parquet")):
        digest.update(path.read_bytes())
    return {
        "seconds": seconds,
        "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        "selection_digest": digest.hexdigest(),
        "kept_chunks": len(result["kept"]),
        "report": {k: v for k, v in result["report"].items()},
    }


def _subprocess(args: list[str]) -> str:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[-2:])} failed:\n{done.stderr}")
    return done.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--chunk-docs", type=int, default=65_536)
    p.add_argument("--per-input", type=int, default=4_194_304, help="documents per input shard")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--method", choices=["top-fraction", "soft"], default="top-fraction")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--target-tokens", type=int, help="soft: a token target (default: as many documents as eligible)")
    p.add_argument("--groups", type=int, default=0, help="stratify by this many synthetic groups of unequal size")
    p.add_argument("--min-teacher-logprob", type=float, default=-4.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="also run the in-memory oracle and compare")
    p.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed)")
    p.add_argument("--phase", choices=["generate", "distributed", "oracle"], help=argparse.SUPPRESS)
    args = p.parse_args()
    strata = {"stratify_by": GROUP_FIELD} if args.groups else {}
    config = (
        SelectionConfig(ratio=args.ratio, min_teacher_logprob=args.min_teacher_logprob, **strata)
        if args.method == "top-fraction"
        else SelectionConfig(
            method="soft", min_teacher_logprob=args.min_teacher_logprob, target_tokens=args.target_tokens, **strata
        )
    )
    if args.phase == "generate":
        generate(args.dir, args.docs, args.per_input, args.chunk_docs, args.seed, args.groups)
        return 0
    if args.phase:
        result = select(args.dir, args.phase, config, args.chunk_docs, args.per_input, args.workers, args.seed, args.groups)
        print(json.dumps(result))
        return 0

    root = Path(args.dir or tempfile.mkdtemp(prefix="reweigh-bench-selection-", dir=os.environ.get("TMPDIR")))
    common = ["--dir", str(root), "--docs", str(args.docs), "--chunk-docs", str(args.chunk_docs)]
    common += ["--per-input", str(args.per_input), "--workers", str(args.workers), "--method", args.method]
    common += ["--ratio", str(args.ratio), "--min-teacher-logprob", str(args.min_teacher_logprob), "--seed", str(args.seed)]
    common += ["--groups", str(args.groups)] + (["--target-tokens", str(args.target_tokens)] if args.target_tokens else [])
    try:
        t0 = time.perf_counter()
        _subprocess([*common, "--phase", "generate"])
        on_disk = sum(f.stat().st_size for f in (root / "scores").rglob("*.parquet"))
        print(f"scores files: {args.docs:,} documents, {on_disk / 2**20:,.0f} MiB, written in {time.perf_counter() - t0:.0f}s")
        results = {}
        for mode in ["distributed", "oracle"] if args.check else ["distributed"]:
            shutil.rmtree(root / "selection", ignore_errors=True)
            shutil.rmtree(root / "steps", ignore_errors=True)
            r = results[mode] = json.loads(_subprocess([*common, "--phase", mode]))
            docs = r["report"]["documents"]
            print(
                f"{mode:<12} wall {r['seconds']:8.1f}s  driver peak RSS {r['driver_peak_rss'] / 2**20:8.1f} MiB"
                f" = {r['driver_peak_rss'] / args.docs:6.2f} B/doc"
                + (f"  (workers' peak {r['worker_peak_rss'] / 2**20:.0f} MiB each)" if mode == "distributed" else "")
                + f"  kept {docs['kept']:,}  threshold {r['report']['threshold']}"
            )
        if args.check:
            d, o = results["distributed"], results["oracle"]
            same = d["selection_digest"] == o["selection_digest"] and d["report"] == o["report"]
            print(f"distributed == oracle (selection files byte for byte, report figures): {'yes' if same else 'NO'}")
            if not same:
                return 1
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"selection: {config.model_dump(exclude_defaults=True)}")
    print(f"machine: {cpu_description()}; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
