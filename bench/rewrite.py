"""Throughput of the whole rewrite job, and how much of its wall time is not model forward passes.

    .venv/bin/python bench/rewrite.py                       # synthetic random-weight pair, 2,000 docs
    .venv/bin/python bench/rewrite.py --teacher T --reference R --docs 20000 --device cuda
    .venv/bin/python bench/rewrite.py --remote s3://bucket/bench   # + the same job from and to a store
    .venv/bin/python bench/rewrite.py --remote moto                # ... on moto's S3 server on loopback

Generates a jsonl corpus (document lengths log-normal, like web text), runs `run_rewrite` into a fresh
directory and prints documents/s, tokens/s, the seconds per phase, and the share of wall time spent
outside `engine.stats.forward_seconds` (reading, tokenizing, batching, checkpointing, selection,
writing, report). The target for that share is under 10% with real models.

`--remote URL` then runs the same job again with its inputs uploaded under URL/in and its output
under URL/out (credentials and endpoint from the store's usual environment, e.g. AWS_ENDPOINT_URL),
checks that both runs wrote the same shards, and prints the store's overhead against local disk:
the difference in wall time outside the model forward passes (the forward time itself is the same
work in both runs). `--remote moto` starts moto's S3 server on loopback (the dev extra), which
measures the client side (requests, uploads, no rename) without a network's latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.config import RewriteConfig, SelectionConfig
from corpus.rewrite import RewriteResult, run_rewrite
from scoring import EngineConfig, ScoringEngine
from scoring.protocols import BuiltScorer

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will can more other what about up time "
    "model teacher reference corpus token document score learn data train kernel python tutorial psalm"
).split()


def generate_corpus(directory: Path, docs: int, shards: int, mean_words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    paths = []
    per_shard = math.ceil(docs / shards)
    for s in range(shards):
        path = directory / f"bench-{s:03d}.jsonl"
        with path.open("w") as fh:
            for i in range(s * per_shard, min(docs, (s + 1) * per_shard)):
                n = max(1, int(rng.lognormvariate(math.log(mean_words), 0.8)))
                text = " ".join(rng.choice(_WORDS) for _ in range(n))
                fh.write(json.dumps({"id": i, "text": text.capitalize() + "."}) + "\n")
        paths.append(str(path))
    return paths


def synthetic_pair(directory: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    from tests.synthetic import build_tokenizer, save_random_llama

    tok = build_tokenizer()
    teacher = save_random_llama(directory / "teacher", tok, hidden_size=hidden, num_layers=layers, seed=1)
    reference = save_random_llama(
        directory / "reference", tok, hidden_size=max(32, hidden // 2), num_layers=max(1, layers // 2), seed=2
    )
    return teacher, reference


def timed_job(engine: ScoringEngine, job: RewriteConfig) -> tuple[RewriteResult, float, float]:
    """The result, wall seconds and model-forward seconds of one run."""
    forward = engine.stats.forward_seconds
    started = time.perf_counter()
    result = run_rewrite(job, BuiltScorer(engine))
    return result, time.perf_counter() - started, engine.stats.forward_seconds - forward


def remote_run(
    engine: ScoringEngine, job: RewriteConfig, url: str, local: tuple[RewriteResult, float, float]
) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for path in job.inputs:
        fs.pipe_file(f"{root}/in/{Path(path).name}", Path(path).read_bytes())
    remote_job = job.model_copy(
        update={"inputs": [f"{url}/in/{Path(p).name}" for p in job.inputs], "output": f"{url}/out"}
    )
    result, wall, forward = timed_job(engine, remote_job)
    local_result, local_wall, local_forward = local
    same = [s.sha256 for s in result.manifest.shards] == [s.sha256 for s in local_result.manifest.shards]
    outside, local_outside = wall - forward, local_wall - local_forward
    return [
        f"remote {url}: wall {wall:.2f}s ({', '.join(f'{k} {v:.2f}s' for k, v in result.phases.items())})",
        f"  shards identical to the local run: {same}",
        f"  outside model forward: store {outside:.2f}s vs local disk {local_outside:.2f}s -> overhead "
        f"{outside - local_outside:+.2f}s ({(outside - local_outside) / local_wall:+.1%} of the local wall time)",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--teacher", help="teacher model directory (default: a synthetic random-weight pair)")
    p.add_argument("--reference")
    p.add_argument("--hidden", type=int, default=256, help="synthetic teacher hidden size")
    p.add_argument("--layers", type=int, default=4, help="synthetic teacher layers")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--mean-words", type=int, default=150)
    p.add_argument("--chunk-docs", type=int, default=2048)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--token-budget", type=int, default=16384)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--select", default="top-fraction", choices=["top-fraction", "soft"])
    p.add_argument("--remote", help="also run from and to this store prefix (s3://bucket/x), or 'moto'")
    args = p.parse_args()
    server = None
    if args.remote == "moto":
        import os

        from tests.corpus.s3 import ENV, MotoServer, fresh_fs

        server = MotoServer()
        os.environ.update({**ENV, "AWS_ENDPOINT_URL": server.url})
        fresh_fs().mkdir("reweigh-bench")
        args.remote = "s3://reweigh-bench/run"

    import matplotlib.pyplot  # noqa: F401  (imported before timing: else the first run's plots pay for it)

    with tempfile.TemporaryDirectory(prefix="reweigh-bench-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        if args.teacher and args.reference:
            teacher, reference = Path(args.teacher), Path(args.reference)
        else:
            teacher, reference = synthetic_pair(root / "models", args.hidden, args.layers)
        inputs = generate_corpus(root / "in", args.docs, args.shards, args.mean_words, seed=0)
        config = EngineConfig(
            dtype=args.dtype,
            device=args.device,
            max_length=args.max_length,
            token_budget=args.token_budget,
            num_threads=args.threads,
        )
        engine = ScoringEngine.from_pretrained(teacher, reference, config)
        job = RewriteConfig(
            inputs=inputs,
            output=str(root / "out"),
            chunk_docs=args.chunk_docs,
            selection=SelectionConfig(method=args.select),
        )
        if args.remote:
            # Untimed, on one input shard: one-time costs (first plots, first selection imports) would
            # otherwise land on whichever of the two compared runs goes first.
            run_rewrite(
                job.model_copy(update={"inputs": inputs[:1], "output": str(root / "warmup")}),
                BuiltScorer(engine),
            )
            engine.stats = type(engine.stats)()
        local = timed_job(engine, job)
        result, wall, _ = local
        s = dataclasses.replace(engine.stats)  # the local run's figures
        remote_lines = []
        if args.remote:
            try:
                remote_lines = remote_run(engine, job, args.remote.rstrip("/"), local)
            finally:
                if server is not None:
                    server.stop()

    outside = 1.0 - s.forward_seconds / wall if wall else 0.0
    fp = engine.fingerprint
    print(
        f"models: teacher {fp.teacher.get('name')}, reference {fp.reference.get('name')}; {fp.dtype} on {fp.device_type}, max_length {fp.max_length}"
    )
    print(
        f"corpus: {result.manifest.totals.documents_in} documents in {len(inputs)} jsonl shards, {s.tokens} tokens scored"
    )
    print(f"wall: {wall:.2f}s  ({', '.join(f'{k} {v:.2f}s' for k, v in result.phases.items())})")
    print(
        f"throughput: {result.manifest.totals.documents_in / wall:,.1f} docs/s, {s.tokens / wall:,.0f} tokens/s"
    )
    print(
        f"model forward: {s.forward_seconds:.2f}s; outside forward: {outside:.1%} of wall time (target < 10%)"
    )
    in_engine = s.seconds - s.forward_seconds  # tokenizing, windowing, batching inside engine.score
    print(
        f"  of which: engine.score outside forward {in_engine:.2f}s; job outside engine.score "
        f"{wall - s.seconds:.2f}s (reading, checkpoints, selection, writing, report)"
    )
    print(f"padding: {s.padding_fraction:.1%} of batch slots; batches: {s.batches}")
    print(f"kept: {result.manifest.totals.rows_out} documents in {len(result.manifest.shards)} shards")
    for line in remote_lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
