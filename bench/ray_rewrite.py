"""Rewrite throughput on this machine: `--engine local` vs `--engine ray`, and Ray's overhead.

Same corpus (jsonl shards of 20..400-word documents), same random-weight pair (a 4-layer, 256-wide
teacher and a 2-layer, 128-wide reference), same job settings. Runs, in one process:

    local, 1 torch thread        the reference bytes for the equality check
    local, all cores             what `--engine local` does on this machine
    ray, --actors A              A CPU actors with one thread each, on `ray.init(num_cpus=cores)`

Prints documents/s of each (whole job, and its scoring phase), whether the Ray directory is
byte-identical to the 1-thread local one, and Ray's overhead fraction:

    1 - (seconds actors spent inside engine.score) / (actors x wall seconds of the Ray scoring pass)

i.e. the share of the actors' reserved time not spent scoring: actor start-up and model loads,
reading, pickling, scheduling and the driver's writes. Ray's own start-up (`ray.init`, which a
cluster pays once, not per job) is printed apart.

    python bench/ray_rewrite.py [--docs 3000] [--shards 4] [--actors 2] [--quick]
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/ray_rewrite.py`, this file's folder comes first on sys.path, and
# bench/scoring.py would shadow the `scoring` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

import torch
from corpus.ray_engine import RayOptions, RayRewrite, require_ray

from corpus.rewrite import RewriteConfig, RewriteResult, run_rewrite
from scoring import EngineConfig, ScoringEngine
from scoring.synthetic import build_tokenizer, save_random_llama

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


def report(name: str, result: RewriteResult, load_s: float = 0.0) -> None:
    docs = result.manifest.totals.documents_in
    scoring = result.phases.get("scoring", 0.0)
    print(
        f"{name:<28} job {result.seconds + load_s:6.1f}s {rate(docs, result.seconds + load_s)} | "
        f"scoring phase {scoring:6.1f}s {rate(docs, scoring)}"
    )


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
            started = time.perf_counter()
            engine = ScoringEngine.from_pretrained(
                teacher, reference, one_thread.model_copy(update={"num_threads": threads})
            )
            load_s = time.perf_counter() - started
            results[name] = run_rewrite(job(name), engine)
            report(f"local, {threads} thread(s)", results[name], load_s)
        torch.set_num_threads(cores)

        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING)
        init_s = time.perf_counter() - started
        try:
            rewrite = RayRewrite(teacher, reference, one_thread, RayOptions(actors=args.actors))
            results["ray"] = rewrite.run(job("ray"))
        finally:
            ray.shutdown()
        report(f"ray, {args.actors} actor(s) x 1 thread", results["ray"])
        st = rewrite.stats
        busy = st.score_seconds / (args.actors * st.ray_seconds) if st.ray_seconds else 0.0
        docs = results["ray"].manifest.totals.documents_in
        print(f"  ray.init (once per cluster, not in the job):  {init_s:.1f}s")
        print(f"  fingerprint probe (one model load):           {st.probe_seconds:.1f}s")
        print(
            f"  Ray scoring pass {st.ray_seconds:.1f}s wall, actors inside engine.score {st.score_seconds:.1f}s "
            f"(forward {st.forward_seconds:.1f}s) = {busy:.0%} of {args.actors} x wall"
        )
        print(f"  Ray overhead fraction: {1 - busy:.0%} of actor time not spent scoring")
        print(f"  steady-state rate inside the actors: {rate(docs, st.score_seconds / args.actors)}")
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
