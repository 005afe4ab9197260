"""Scoring throughput on this CPU (or GPU): the whole `reweigh score` command against the plain loop.

For two pair shapes, each a random-weight teacher plus a 4 x 256 reference from configs:
- gpt2: teacher 12 layers x 768 (GPT-2-small size), 50,304-row vocabulary;
- smollm2: teacher 30 layers x 576, 9 query / 3 key-value heads, tied embeddings, 49,152-row vocabulary
  (SmolLM2-135M's shape).

Per shape it prints the dtype `--dtype auto` picked, the matmul peak measured in that dtype, the
engine's model FLOP/s as a share of that peak, and the whole command's tokens/s (reading a jsonl,
loading the pair, scoring, writing parquet) against the plain per-document fp32 loop a user would
write. The two run interleaved in one process, `--repeats` times, alternating which goes first, so a
loaded machine slows both alike; the ratio is the figure to quote.

    python bench/scoring.py [--docs 16] [--repeats 2] [--shapes gpt2,smollm2] [--token-budget N] [--quick]
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/scoring.py`, this file's folder comes first on sys.path and its name would
# shadow the `scoring` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs

import argparse
import contextlib
import io
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM

from scoring import ScoringEngine
from scoring.hardware import cpu_description
from scoring.models import cpu_has_native_bf16, resolve_device, resolve_dtype
from service.commands import score as score_command
from tests.synthetic import build_tokenizer, save_random_llama

REFERENCE = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=704)
SHAPES: dict[str, dict[str, Any]] = {
    "gpt2": dict(vocab_size=50_304, teacher=dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048)),
    "smollm2": dict(
        vocab_size=49_152,
        tie_embeddings=True,
        teacher=dict(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536),
    ),
}
QUICK_TEACHER = dict(hidden_size=64, num_layers=2, num_heads=4)
QUICK_REFERENCE = dict(hidden_size=32, num_layers=1, num_heads=2)


def matmul_peak(dtype: torch.dtype, device: torch.device, budget_s: float = 3.0) -> tuple[float, float]:
    """(best FLOP/s, FLOP per CPU-second) of square matmuls in `dtype`.

    The size is fixed, not chosen by timing (on a loaded machine timing picks a uselessly small
    one): 2048 on a CPU, 256 where bf16 is emulated (~1 GFLOP/s), 8192 on a GPU. The per-CPU-second
    figure is what a loaded machine distorts least: it counts only the time this process's threads ran.
    """
    emulated = device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16()
    size = 8192 if device.type == "cuda" else 256 if emulated else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    best, runs = 0.0, 0
    cpu_started = time.process_time()
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or runs < 2:
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
        runs += 1
    return best, runs * 2 * size**3 / (time.process_time() - cpu_started)


def model_flops(model_dir: Path, token_counts: list[int], max_length: int) -> float:
    """Useful forward FLOPs: 2 x (trunk + head) weights per token, plus causal attention (QK^T, AV)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = model.config
    trunk = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    head = cfg.vocab_size * cfg.hidden_size
    total = 0.0
    for n in token_counts:
        total += 2 * (trunk + head) * n
        m = min(n, max_length)  # documents here fit one window
        total += 4 * cfg.num_hidden_layers * cfg.hidden_size * m * (m + 1) / 2 * math.ceil(n / m)
    return total


def make_documents(tokenizer: Any, count: int, seed: int, longest: int) -> list[str]:
    """Texts whose token counts spread log-uniformly from 32 to `longest` (decoded random word tokens)."""
    rng = np.random.default_rng(seed)
    word_ids = np.array(sorted(i for t, i in tokenizer.get_vocab().items() if t.startswith("Ġ") and t[1:].isalpha()))
    lengths = np.exp(rng.uniform(math.log(32), math.log(longest), size=count)).astype(int)
    return [tokenizer.decode(rng.choice(word_ids, size=int(n)).tolist()) for n in lengths]


def plain_loop(models: list[Any], tokenizer: Any, docs: list[str]) -> tuple[np.ndarray, float]:
    """What a user writes: one document at a time, fp32, full logits, full log_softmax. Returns the
    difference scores and the seconds it took (models already loaded)."""
    means = np.zeros((len(models), len(docs)))
    started = time.perf_counter()
    with torch.no_grad():
        for m, model in enumerate(models):
            for d, text in enumerate(docs):
                ids = tokenizer(text, add_special_tokens=False).input_ids
                seq = torch.tensor([[tokenizer.bos_token_id, *ids]])
                logp = torch.log_softmax(model(seq).logits.float()[0, :-1], dim=-1)
                means[m, d] = float(logp.gather(1, seq[0, 1:, None]).mean())
    return means[0] - means[1], time.perf_counter() - started


def whole_command(teacher: Path, reference: Path, inputs: Path, output: Path, token_budget: int | None) -> tuple[float, ScoringEngine]:
    """`reweigh score` run in this process (reading, loading the pair, scoring, writing parquet); returns
    its wall time and the engine it built (for the engine's own counters, plus `cpu_seconds`: the
    process's CPU time inside engine.score)."""
    built: list[ScoringEngine] = []
    build = score_command.engine_from_args

    def keep(args: argparse.Namespace) -> ScoringEngine:
        engine = build(args)
        engine.cpu_seconds = 0.0  # type: ignore[attr-defined]
        score = engine.score

        def timed_score(*a: Any, **k: Any) -> Any:
            started = time.process_time()
            try:
                return score(*a, **k)
            finally:
                engine.cpu_seconds += time.process_time() - started  # type: ignore[attr-defined]

        engine.score = timed_score  # type: ignore[method-assign]
        built.append(engine)
        return engine

    argv = ["--teacher", str(teacher), "--reference", str(reference), "-o", str(output), str(inputs)]
    if token_budget is not None:
        argv[:0] = ["--token-budget", str(token_budget)]
    parser = argparse.ArgumentParser()
    score_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["score", *argv])
    started = time.perf_counter()
    # The command's own summary line would interleave with this report.
    with mock.patch.object(score_command, "engine_from_args", keep), contextlib.redirect_stdout(io.StringIO()):
        args.func(args)
    return time.perf_counter() - started, built[0]


def bench_shape(name: str, args: argparse.Namespace, tokenizer: Any, device: torch.device, tmp: Path) -> None:
    shape = SHAPES[name]
    t_shape, r_shape = (QUICK_TEACHER, QUICK_REFERENCE) if args.quick else (shape["teacher"], REFERENCE)
    common = dict(vocab_size=shape["vocab_size"], max_positions=2048, tie_embeddings=shape.get("tie_embeddings", False))
    teacher = save_random_llama(tmp / f"{name}-t", tokenizer, seed=1, **t_shape, **common)
    reference = save_random_llama(tmp / f"{name}-r", tokenizer, seed=2, **r_shape, **common)
    docs = make_documents(tokenizer, args.docs, args.seed, longest=256 if args.quick else 2048)
    inputs = tmp / f"{name}.jsonl"
    inputs.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(docs)))
    counts = [len(tokenizer(d, add_special_tokens=False).input_ids) for d in docs]
    tokens = sum(counts)
    flops = model_flops(teacher, counts, 2048) + model_flops(reference, counts, 2048)
    plain_models = [AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for p in (teacher, reference)]
    plain_loop(plain_models, tokenizer, docs[:1])  # warm-up
    whole_command(teacher, reference, inputs, tmp / "warm.parquet", args.token_budget)

    plain_s, command_s, score_s, forward_s, score_cpu_s = [], [], [], [], []
    plain_scores, command_scores = np.zeros(0), np.zeros(0)
    engine: ScoringEngine | None = None
    for rep in range(args.repeats):
        for which in (("plain", "command") if rep % 2 == 0 else ("command", "plain")):
            if which == "plain":
                plain_scores, secs = plain_loop(plain_models, tokenizer, docs)
                plain_s.append(secs)
            else:
                secs, engine = whole_command(teacher, reference, inputs, tmp / f"{name}.parquet", args.token_budget)
                command_s.append(secs)
                score_s.append(engine.stats.seconds)
                forward_s.append(engine.stats.forward_seconds)
                score_cpu_s.append(engine.cpu_seconds)  # type: ignore[attr-defined]
                command_scores = pq.read_table(tmp / f"{name}.parquet").column("score").to_numpy()
    assert engine is not None
    dtype = resolve_dtype("auto", device)
    peak, peak_per_cpu_s = matmul_peak(dtype, device)
    med = statistics.median
    ratios = [p / c for p, c in zip(plain_s, command_s, strict=True)]
    print(f"\n== {name}: teacher {t_shape}, reference {r_shape}, vocabulary {shape['vocab_size']:,}")
    print(f"documents: {len(docs)}, tokens: {tokens:,} (lengths {min(counts)}..{max(counts)}); "
          f"padding {engine.stats.padding_fraction:.1%} in {engine.stats.batches} batches, "
          f"token budget {engine.config.token_budget:,}")
    print(f"dtype auto picked: {engine.fingerprint.dtype}; matmul peak in it: {peak / 1e9:,.1f} GFLOP/s "
          f"(best burst), {peak_per_cpu_s / 1e9:,.1f} GFLOP per CPU-second")
    print(f"plain loop (fp32, per document, full log_softmax): {tokens / med(plain_s):,.0f} tokens/s "
          f"(runs: {', '.join(f'{s:.1f}s' for s in plain_s)})")
    print(f"whole `reweigh score` command: {tokens / med(command_s):,.0f} tokens/s "
          f"(runs: {', '.join(f'{s:.1f}s' for s in command_s)}; model loading and I/O included)")
    print(f"command vs plain loop: {med(ratios):.2f}x (per run: {', '.join(f'{r:.2f}x' for r in ratios)})")
    print(f"engine model FLOP/s: {flops / med(score_s) / 1e9:,.1f} GFLOP/s = {flops / med(score_s) / peak:.0%} of the "
          f"peak inside engine.score; {flops / med(forward_s) / peak:.0%} counting forward passes only; "
          f"engine.score is {med(score_s) / med(command_s):.0%} of the command's wall time")
    # On a shared machine wall time counts the minutes other jobs held the cores; CPU time does not.
    print(f"engine per CPU-second: {flops / med(score_cpu_s) / 1e9:,.1f} GFLOP = "
          f"{flops / med(score_cpu_s) / peak_per_cpu_s:.0%} of the matmul's GFLOP per CPU-second")
    print(f"parity: max |command - plain loop| score difference {np.abs(command_scores - plain_scores).max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shapes", default="gpt2,smollm2", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--token-budget", type=int, default=None, help="passed to the command (default: its own)")
    parser.add_argument("--quick", action="store_true", help="tiny models and few documents (checks it runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.docs, args.repeats = 6, 1
    device = resolve_device("auto")
    print(f"machine: {cpu_description()}; {torch.get_num_threads()} torch threads; device {device}; "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}")
    tokenizer = build_tokenizer(vocab_size=2000, extra_text=" ".join(__doc__.split()) * 20)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            if name not in SHAPES:
                raise SystemExit(f"--shapes: unknown shape {name!r} (known: {', '.join(SHAPES)})")
            bench_shape(name, args, tokenizer, device, Path(tmp))


if __name__ == "__main__":
    main()
