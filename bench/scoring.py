"""Scoring throughput: the plain per-document loop a user would write vs the engine.

Same process, same documents (32..2048 tokens), same random-weight pair: a GPT-2-small-size teacher
(12 layers, 768 wide, 50,304-row vocabulary) and a small reference (4 layers, 256 wide). Prints
tokens/s of each, their ratio, the engine's model FLOP/s as a fraction of the bf16 and fp32 matmul
peaks measured on the spot, and how far bf16 scores move from fp32 (rank correlation, overlap of
the top-50% selection).

    python bench/scoring.py [--docs 24] [--quick]
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/scoring.py`, this file's folder comes first on sys.path and its name would
# shadow the `scoring` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from scoring import EngineConfig, ScoringEngine
from scoring.models import cpu_has_native_bf16, resolve_device
from tests.synthetic import build_tokenizer, save_random_llama

VOCAB = 50_304


def matmul_peak(dtype: torch.dtype, device: torch.device, budget_s: float = 3.0) -> float:
    """Best FLOP/s of square matmuls in `dtype`, at the largest size (<= 4096) that takes < 0.3 s.

    Sizes grow from 256, so an emulated dtype (bf16 without AMX runs at ~1 GFLOP/s) costs seconds,
    not minutes.
    """

    def once(a: torch.Tensor, b: torch.Tensor) -> float:
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    size = 256
    while True:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        once(a, b)
        if size >= 4096 or once(a, b) * 8 > 0.3:
            break
        size *= 2
    best = 0.0
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline:
        best = max(best, 2 * size**3 / once(a, b))
    return best


def model_flops(model_dir: Path, token_counts: list[int], max_length: int) -> float:
    """Useful forward FLOPs: 2 x (trunk + head) parameters per token, plus causal attention."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = model.config
    trunk = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    head = cfg.vocab_size * cfg.hidden_size
    total = 0.0
    for n in token_counts:
        total += 2 * (trunk + head) * n
        # QK^T and AV over the causal half, window by window (documents here fit one window).
        m = min(n, max_length)
        total += 4 * cfg.num_hidden_layers * cfg.hidden_size * m * (m + 1) / 2 * math.ceil(n / m)
    return total


def make_documents(tokenizer, count: int, seed: int) -> list[str]:
    """Texts whose token counts spread log-uniformly from 32 to 2048 (decoded random word tokens)."""
    rng = np.random.default_rng(seed)
    word_ids = np.array(sorted(i for t, i in tokenizer.get_vocab().items() if t.startswith("Ġ") and t[1:].isalpha()))
    lengths = np.exp(rng.uniform(math.log(32), math.log(2048), size=count)).astype(int)
    return [tokenizer.decode(rng.choice(word_ids, size=int(n)).tolist()) for n in lengths]


def plain_loop(model_dir: Path, tokenizer, docs: list[str]) -> tuple[list[float], float]:
    """What a user writes: one document at a time, fp32, full logits, full log_softmax."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    means = []
    started = time.perf_counter()
    with torch.no_grad():
        for text in docs:
            ids = tokenizer(text, add_special_tokens=False).input_ids
            seq = torch.tensor([[tokenizer.bos_token_id, *ids]])
            logp = torch.log_softmax(model(seq).logits.float()[0, :-1], dim=-1)
            means.append(float(logp.gather(1, seq[0, 1:, None]).mean()))
    return means, time.perf_counter() - started


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def top_half_overlap(a: np.ndarray, b: np.ndarray) -> float:
    k = len(a) // 2
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="tiny models and few documents (checks it runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device("auto")
    tokenizer = build_tokenizer(vocab_size=2000, extra_text=" ".join(__doc__.split()) * 20)
    with tempfile.TemporaryDirectory() as tmp:
        big = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048)
        small = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=704)
        if args.quick:
            big, small, args.docs = dict(hidden_size=64, num_layers=2), dict(hidden_size=32, num_layers=1, num_heads=2), 6
        teacher = save_random_llama(Path(tmp, "t"), tokenizer, vocab_size=VOCAB, max_positions=2048, seed=1, **big)
        reference = save_random_llama(Path(tmp, "r"), tokenizer, vocab_size=VOCAB, max_positions=2048, seed=2, **small)
        docs = make_documents(tokenizer, args.docs, args.seed)
        counts = [len(tokenizer(d, add_special_tokens=False).input_ids) for d in docs]
        tokens = sum(counts)

        t_plain, t_secs = plain_loop(teacher, tokenizer, docs)
        r_plain, r_secs = plain_loop(reference, tokenizer, docs)
        plain_secs = t_secs + r_secs

        engine = ScoringEngine.from_pretrained(teacher, reference, EngineConfig(max_length=2048, token_budget=16384))
        engine.score(docs[:2])  # warm-up (allocator, kernels)
        engine.stats.__init__()  # type: ignore[misc]
        started = time.perf_counter()
        scores = engine.score(docs)
        engine_secs = time.perf_counter() - started

        flops = model_flops(teacher, counts, 2048) + model_flops(reference, counts, 2048)
        fp32_peak = matmul_peak(torch.float32, device)
        bf16_peak = matmul_peak(torch.bfloat16, device)
        engine_plain = np.array(t_plain) - np.array(r_plain)
        engine_scores = np.array([s.score for s in scores])
        max_diff = float(np.abs(engine_scores - engine_plain).max())

        bf16_note = ""
        if engine.fingerprint.dtype == "float32" and not args.quick:
            bf16 = ScoringEngine.from_pretrained(teacher, reference, EngineConfig(dtype="bfloat16", max_length=2048))
            if device.type == "cuda" or cpu_has_native_bf16():
                b = np.array([s.score for s in bf16.score(docs)])
                bf16_note = f"bf16 vs fp32 scores: Spearman {spearman(engine_scores, b):.4f}, top-50% overlap {top_half_overlap(engine_scores, b):.1%}"
            else:
                bf16_note = "bf16 vs fp32 comparison skipped: bf16 is emulated on this CPU (no AMX / AVX512-BF16)"

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {device}, "
          f"native bf16: {cpu_has_native_bf16() if device.type == 'cpu' else True}, torch {torch.__version__}")
    print(f"documents: {len(docs)}, tokens: {tokens} (lengths {min(counts)}..{max(counts)})")
    print(f"plain loop (fp32, per document, full log_softmax): {tokens / plain_secs:,.0f} tokens/s ({plain_secs:.1f}s)")
    print(f"engine ({engine.fingerprint.dtype}, bucketed, chunked head): {tokens / engine_secs:,.0f} tokens/s "
          f"({engine_secs:.1f}s, padding {engine.stats.padding_fraction:.1%}, {engine.stats.batches} batches)")
    print(f"speed-up: {plain_secs / engine_secs:.2f}x (target >= 5x)")
    print(f"engine model FLOP/s: {flops / engine_secs / 1e9:,.1f} GFLOP/s = {flops / engine_secs / fp32_peak:.0%} of the "
          f"fp32 matmul peak ({fp32_peak / 1e9:,.1f} GFLOP/s), {flops / engine_secs / bf16_peak:.0%} of the bf16 peak "
          f"({bf16_peak / 1e9:,.1f} GFLOP/s)")
    print(f"parity: max |engine - plain| score difference {max_diff:.2e}")
    if bf16_note:
        print(bf16_note)


if __name__ == "__main__":
    main()
