"""Service throughput: many small concurrent HTTP requests vs the same documents through the bulk path.

One run, one machine, one random-weight pair: first the documents go through `engine.score` in one
call (what `reweigh score` does), then a real `reweigh serve` process on loopback gets them as
`--docs-per-request`-document requests from `--clients` concurrent clients (a fixed number of
requests, so the run is bounded). Prints requests/s, p50/p99 latency, tokens/s of both paths and
their ratio (target: the service reaches at least 70% of the bulk tokens/s), plus how the service
batched (engine calls, documents per call).

    python bench/service.py [--docs 256] [--clients 32] [--docs-per-request 4] [--quick]

The load generator runs on the same cores as the server, as any loopback benchmark does; on a
2-core machine that alone costs the service a share of its CPU.
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/service.py`, this folder would come first on sys.path and `bench/scoring.py`
# would shadow the `scoring` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import asyncio
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from scoring import EngineConfig, ScoringEngine
from tests.service.live import LiveServer, free_port, serve_command
from tests.synthetic import build_tokenizer, save_random_llama

VOCAB = 8192


def make_documents(tokenizer: Any, count: int, seed: int, shortest: int, longest: int) -> list[str]:
    """Texts whose token counts spread log-uniformly over [shortest, longest] (random word tokens)."""
    rng = np.random.default_rng(seed)
    word_ids = np.array(
        sorted(i for t, i in tokenizer.get_vocab().items() if t.startswith("Ġ") and t[1:].isalpha())
    )
    lengths = np.exp(rng.uniform(math.log(shortest), math.log(longest), size=count)).astype(int)
    return [tokenizer.decode(rng.choice(word_ids, size=int(n)).tolist()) for n in lengths]


def bulk(engine: ScoringEngine, docs: list[str]) -> tuple[int, float, float]:
    """(tokens, wall seconds, CPU seconds) of one engine.score over all documents."""
    started, cpu = time.perf_counter(), time.process_time()
    results = engine.score(docs)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return sum(r.n_tokens for r in results if r.ok), seconds, cpu_seconds


def server_cpu_seconds(url: str) -> float:
    found = re.search(r"^process_cpu_seconds_total (\S+)$", httpx.get(url + "/metrics").text, re.M)
    return float(found.group(1)) if found else float("nan")


async def load(url: str, requests: list[list[str]], clients: int) -> tuple[list[float], int, float, float]:
    """`clients` workers take requests off one list until it is empty.

    Returns latencies, tokens, wall seconds and the server's CPU seconds of the timed pass."""
    latencies: list[float] = []
    tokens = [0]
    todo = list(enumerate(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while todo:
                n, texts = todo.pop()
                body = {"documents": [{"id": f"{n}-{i}", "text": t} for i, t in enumerate(texts)]}
                started = time.perf_counter()
                r = await client.post("/v1/scores", json=body)
                latencies.append(time.perf_counter() - started)
                r.raise_for_status()
                tokens[0] += sum(d["n_tokens"] for d in r.json()["documents"] if d["status"] == "ok")

        # Warm-up: one untimed pass, as for the bulk path.
        await asyncio.gather(*(worker() for _ in range(clients)))
        latencies.clear()
        tokens[0] = 0
        todo.extend(enumerate(requests))
        cpu = server_cpu_seconds(url)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
        return latencies, tokens[0], wall, server_cpu_seconds(url) - cpu


def batch_histogram(metrics: str) -> tuple[float, float]:
    """(engine calls, documents) for HTTP batches, from the service's own Prometheus counters."""
    count = re.search(r"^reweigh_batch_documents_count (\S+)$", metrics, re.M)
    total = re.search(r"^reweigh_batch_documents_sum (\S+)$", metrics, re.M)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--docs-per-request", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (bulk and server)"
    )
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--quick", action="store_true", help="small models and few documents (checks it runs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer(vocab_size=2000, extra_text=" ".join((__doc__ or "").split()) * 20)
    # Big enough that the forward pass, not HTTP, is the work; small enough for a minute on 2 cores.
    teacher_shape: dict[str, int] = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=704)
    reference_shape: dict[str, int] = dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=352)
    shortest, longest = 16, 256
    if args.quick:
        teacher_shape = dict(hidden_size=64, num_layers=2)
        reference_shape = dict(hidden_size=32, num_layers=1, num_heads=2)
        args.docs, longest = 64, 128
    with tempfile.TemporaryDirectory() as tmp:
        teacher = save_random_llama(
            Path(tmp, "t"), tokenizer, vocab_size=VOCAB, max_positions=1024, seed=1, **teacher_shape
        )
        reference = save_random_llama(
            Path(tmp, "r"), tokenizer, vocab_size=VOCAB, max_positions=1024, seed=2, **reference_shape
        )
        docs = make_documents(tokenizer, args.docs, args.seed, shortest, longest)
        requests = [docs[i : i + args.docs_per_request] for i in range(0, len(docs), args.docs_per_request)]

        engine = ScoringEngine.from_pretrained(
            teacher, reference, EngineConfig(device="cpu", num_threads=args.threads)
        )
        engine.score(docs)  # warm-up: first calls pay one-off costs per batch shape
        bulk_runs = [bulk(engine, docs)]

        port = free_port()
        env = {
            "REWEIGH_TEACHER": str(teacher),
            "REWEIGH_REFERENCE": str(reference),
            "REWEIGH_DEVICE": "cpu",
            "REWEIGH_NUM_THREADS": str(args.threads),
            "REWEIGH_JOBS_DB": str(Path(tmp, "jobs.sqlite")),
            "REWEIGH_BATCH_WAIT_MS": str(args.batch_wait_ms),
            "REWEIGH_MAX_QUEUED_DOCUMENTS": str(max(4096, args.clients * args.docs_per_request)),
            "REWEIGH_API_KEYS": "",
        }
        server = LiveServer(serve_command(port), env, port, Path(tmp, "server.log"))
        try:
            server.wait_ready(timeout=120)
            latencies, http_tokens, http_secs, http_cpu = asyncio.run(
                load(server.url, requests, args.clients)
            )
            calls, batched = batch_histogram(httpx.get(server.url + "/metrics").text)
        finally:
            server.stop()
        # Bulk again after the service: on a shared machine, load from others comes and goes; the
        # faster bulk run is the one compared against (conservative for the service).
        bulk_runs.append(bulk(engine, docs))
        bulk_tokens, bulk_secs, bulk_cpu = min(bulk_runs, key=lambda run: run[1])

    lat = np.array(latencies) * 1000
    bulk_tps = bulk_tokens / bulk_secs
    http_tps = http_tokens / http_secs
    print(
        f"documents: {len(docs)} ({bulk_tokens} tokens, {shortest}-{longest} each); torch threads: {args.threads}"
    )
    print(f"teacher {teacher_shape}, reference {reference_shape}, vocab {VOCAB}, cpu fp32")
    print(
        f"bulk    engine.score(all documents), best of {len(bulk_runs)} ({', '.join(f'{r[1]:.2f}' for r in bulk_runs)} s): "
        f"{bulk_secs:6.2f} s  {bulk_tps:10,.0f} tokens/s  {bulk_tokens / bulk_cpu:10,.0f} tokens/CPU-s"
    )
    print(
        f"service {len(requests)} requests x {args.docs_per_request} docs, {args.clients} clients: {http_secs:6.2f} s  "
        f"{http_tps:10,.0f} tokens/s  {http_tokens / http_cpu:10,.0f} tokens/CPU-s (server process)  "
        f"{len(requests) / http_secs:,.1f} requests/s"
    )
    print(
        f"        latency p50 {np.percentile(lat, 50):,.0f} ms, p99 {np.percentile(lat, 99):,.0f} ms, max {lat.max():,.0f} ms"
    )
    if calls:
        print(f"        engine calls {calls:.0f} (both passes), {batched / calls:.1f} documents per call")
    ratio = http_tps / bulk_tps
    cpu_ratio = (http_tokens / http_cpu) / (bulk_tokens / bulk_cpu)
    print(f"service / bulk tokens/s: {ratio:.0%} (target >= 70%): {'OK' if ratio >= 0.7 else 'BELOW TARGET'}")
    print(f"service / bulk tokens per CPU-second: {cpu_ratio:.0%} (robust to other load on the machine)")


if __name__ == "__main__":
    main()
