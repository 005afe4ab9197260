"""Rewrite throughput on this machine: the local executor vs the Ray executor, and Ray's overhead.

Same corpus (jsonl shards of 20..400-word documents), same random-weight pair (a 4-layer, 256-wide
teacher and a 2-layer, 128-wide reference), same job settings. Runs, in one process:

    local, 1 torch thread        the reference bytes for the equality check
    local, all cores             what `--executor local` does on this machine
    ray, --actors A              A CPU actors with one thread each, on `ray.init(num_cpus=cores)`

Prints documents/s of each (whole job, and its scoring phase), the seconds of every phase, whether
the Ray directory is byte-identical to the 1-thread local one, and Ray's scoring efficiency:

    (local 1-thread scoring seconds) / (A x Ray scoring-phase seconds)

i.e. the share of the actors' reserved time that did the work one local thread does: the rest is
actor start-up and model loads, reading, scheduling and writing. Ray's own start-up (`ray.init`,
which a cluster pays once, not per job) is printed apart.

    python bench/ray_rewrite.py [--docs 3000] [--shards 4] [--actors 2] [--quick]
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/ray_rewrite.py`, this file's folder comes first on sys.path, and
# bench/scoring.py would shadow the `scoring` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

import torch

from corpus.config import RayOptions, RewriteConfig
from corpus.executor.ray import RayExecutor, require_ray
from corpus.rewrite import RewriteResult, run_rewrite
from scoring import EngineConfig
from scoring.config import PairSpec
from tests.synthetic import build_tokenizer, save_random_llama

WORDS = "the a of model teacher reference score corpus token document learn data read write ray".split()


def write_corpus(directory: Path, docs: int, shards: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    paths = []
    per_shard = -(-docs // shards)
    for s in range(shards):
        path = directory / f"shard-{s:03d}.jsonl"
        with path.open("w") as fh:
            for i in range(s * per_shard, min(docs, (s + 1) * per_shard)):
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 400)))
                fh.write(json.dumps({"id": f"d{i}", "text": f"{i} {words}"}) + "\n")
        paths.append(str(path))
    return paths


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rate(docs: int, seconds: float) -> str:
    return f"{docs / seconds:8,.1f} docs/s" if seconds > 0 else "       - docs/s"


def report(name: str, result: RewriteResult) -> None:
    docs = result.manifest.totals.documents_in
    scoring = result.phases.get("scoring", 0.0)
    print(
        f"{name:<28} job {result.seconds:6.1f}s {rate(docs, result.seconds)} | "
        f"scoring phase {scoring:6.1f}s {rate(docs, scoring)}"
    )
    print("    phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk-docs", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="few documents (checks it runs)")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.chunk_docs = 200, 32
    logging.basicConfig(level=logging.WARNING)
    ray = require_ray()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = build_tokenizer()
        teacher = save_random_llama(root / "teacher", tok, hidden_size=256, num_layers=4, seed=1)
        reference = save_random_llama(root / "reference", tok, hidden_size=128, num_layers=2, seed=2)
        (root / "in").mkdir()
        inputs = write_corpus(root / "in", args.docs, args.shards, seed=0)
        one_thread = EngineConfig(dtype="float32", device="cpu", num_threads=1)

        def job(name: str) -> RewriteConfig:
            return RewriteConfig(inputs=inputs, output=str(root / name), chunk_docs=args.chunk_docs)

        results: dict[str, RewriteResult] = {}
        for name, threads in (("local-1", 1), ("local-all", cores)):
            pair = PairSpec(str(teacher), str(reference), one_thread.model_copy(update={"num_threads": threads}))
            results[name] = run_rewrite(job(name), pair)  # the model load is in the job's time
            report(f"local, {threads} thread(s)", results[name])
        torch.set_num_threads(cores)

        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING)
        init_s = time.perf_counter() - started
        executor = RayExecutor(RayOptions(actors=args.actors, workers=cores))
        try:
            results["ray"] = run_rewrite(job("ray"), PairSpec(str(teacher), str(reference), one_thread), executor=executor)
        finally:
            executor.close()
            ray.shutdown()
        report(f"ray, {args.actors} actor(s) x 1 thread", results["ray"])
        ray_scoring = results["ray"].phases["scoring"]
        efficiency = results["local-1"].phases["scoring"] / (args.actors * ray_scoring) if ray_scoring else 0.0
        print(f"  ray.init (once per cluster, not in the job):  {init_s:.1f}s")
        print(f"  Ray scoring efficiency: {efficiency:.0%} of {args.actors} actors x the scoring phase's wall time")
        same = tree(root / "ray") == tree(root / "local-1")
        print(f"  Ray directory byte-identical to local (1 thread): {'yes' if same else 'NO'}")
        print(
            f"  local all-cores vs 1-thread scores identical: "
            f"{'yes' if tree(root / 'local-all') == tree(root / 'local-1') else 'no (thread count moves last bits)'}"
        )
        print(
            f"machine: {cores} cores, torch {torch.__version__}, ray {ray.__version__}; {args.docs} docs in "
            f"{args.shards} shards, chunk_docs={args.chunk_docs}, "
            f"{results['ray'].manifest.totals.tokens_in:,} tokens"
        )


if __name__ == "__main__":
    main()
