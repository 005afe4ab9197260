"""The GPU measurement behind bench/gpu.sh: parity, throughput against two baselines, memory.

Random-weight pairs from configs (nothing downloaded), one fixed document set:

1. parity: a ~100M teacher (12 x 768) and a 4 x 256 reference with Qwen's 151,936-row vocabulary,
   CUDA bf16 and CUDA fp32 scores against CPU fp32 (max |diff|, Spearman, top-50% overlap);
2. speed: a 1.7B-class teacher (Qwen3-1.7B's shape as a Llama: 28 x 2048, 16/8 heads, 6144 MLP,
   tied 151,936-row embeddings) with the ~100M teacher as reference:
   - the engine (`--dtype auto`) at several token budgets: tokens/s, MFU against the bf16 matmul peak
     measured in the same run, peak GPU memory, padding;
   - a plain per-document HF loop (bf16, full logits, full log_softmax) on a subset of the documents;
   - a MiniPLM-style loop: all tokens packed into 1,025-token chunks, fixed fp16 batches of 16, full
     logits and cross-entropy (what MiniPLM's scorer does under torchrun, on one GPU here);
3. checks that the fast path is the one running: which attention kernels a batch launched, and how
   many times the host waited for the device per batch (torch's sync debug mode).

    python bench/gpu.py --out bench/results/gpu.md            # on a CUDA machine (bench/gpu.sh)
    python bench/gpu.py --dry-run --out /tmp/gpu-dry.md       # tiny shapes on the CPU: checks it runs
"""

from __future__ import annotations

import os
import sys

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs

import argparse
import math
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from scoring import EngineConfig, ScoringEngine
from tests.synthetic import build_tokenizer, save_random_llama

QWEN_VOCAB = 151_936
MINIPLM_CHUNK, MINIPLM_BATCH = 1025, 16


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the real one on an H200, or a dry run that only proves the code path."""

    device: str
    vocab: int
    big: dict[str, Any]  # the 1.7B-class teacher
    mid: dict[str, Any]  # the ~100M teacher (parity) and reference (speed)
    small: dict[str, Any]  # the parity reference
    docs: int  # documents in the speed set
    parity_docs: int
    plain_docs: int  # documents the slow plain loop scores
    longest: int  # longest document, tokens
    budgets: tuple[int, ...]


H200 = Plan(
    device="cuda",
    vocab=QWEN_VOCAB,
    big=dict(hidden_size=2048, num_layers=28, num_heads=16, num_kv_heads=8, intermediate_size=6144, tie_embeddings=True),
    mid=dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048),
    small=dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=704),
    docs=1024,
    parity_docs=128,
    plain_docs=128,
    longest=2048,
    budgets=(16_384, 65_536),
)
DRY = Plan(
    device="cpu",
    vocab=4096,
    big=dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, tie_embeddings=True),
    mid=dict(hidden_size=32, num_layers=1, num_heads=2),
    small=dict(hidden_size=32, num_layers=1, num_heads=2),
    docs=24,
    parity_docs=12,
    plain_docs=6,
    longest=256,
    budgets=(1024, 4096),
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * size**3 / (time.perf_counter() - started)


def make_documents(tokenizer: Any, count: int, longest: int, seed: int) -> list[str]:
    """Token counts log-uniform in 32..longest: the mix a web corpus has, fixed by the seed."""
    rng = np.random.default_rng(seed)
    word_ids = np.array(sorted(i for t, i in tokenizer.get_vocab().items() if t.startswith("Ġ") and t[1:].isalpha()))
    lengths = np.exp(rng.uniform(math.log(32), math.log(longest), size=count)).astype(int)
    return [tokenizer.decode(rng.choice(word_ids, size=int(n)).tolist()) for n in lengths]


def forward_flops(model_dir: Path, token_counts: list[int], window: int) -> float:
    """2 x (trunk + head) weights per token plus causal attention, as in bench/scoring.py."""
    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    trunk = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    per_token = 2 * (trunk + cfg.vocab_size * cfg.hidden_size)
    total = 0.0
    for n in token_counts:
        m = min(n, window)
        total += per_token * n + 4 * cfg.num_hidden_layers * cfg.hidden_size * m * (m + 1) / 2 * math.ceil(n / m)
    return total


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def top_half_overlap(a: np.ndarray, b: np.ndarray) -> float:
    k = len(a) // 2
    return len(set(np.argsort(-a)[:k].tolist()) & set(np.argsort(-b)[:k].tolist())) / k


def engine_scores(teacher: Path, reference: Path, docs: list[str], **config: Any) -> tuple[np.ndarray, ScoringEngine]:
    engine = ScoringEngine.from_pretrained(teacher, reference, EngineConfig(**config))
    return np.array([s.score for s in engine.score(docs)]), engine


def parity(plan: Plan, tokenizer: Any, tmp: Path, report: list[str]) -> None:
    teacher = save_random_llama(tmp / "mid", tokenizer, vocab_size=plan.vocab, max_positions=2048, seed=1, **plan.mid)
    reference = save_random_llama(tmp / "small", tokenizer, vocab_size=plan.vocab, max_positions=2048, seed=2, **plan.small)
    docs = make_documents(tokenizer, plan.parity_docs, min(plan.longest, 1024), seed=1)
    cpu, _ = engine_scores(teacher, reference, docs, device="cpu", dtype="float32")
    report += ["## Parity against CPU fp32", "", f"{len(docs)} documents; teacher {plan.mid}, reference {plan.small}, "
               f"vocabulary {plan.vocab:,}.", "", "| run | max abs diff (nats) | Spearman | top-50% overlap |", "|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
        got, _ = engine_scores(teacher, reference, docs, device=plan.device, dtype=dtype)
        report.append(f"| {plan.device} {dtype} | {np.abs(got - cpu).max():.2e} | {spearman(cpu, got):.5f} | "
                      f"{top_half_overlap(cpu, got):.1%} |")
    report.append(f"\nScore spread (CPU fp32): std {cpu.std():.3f} nats.\n")


def plain_loop(model_dir: Path, tokenizer: Any, docs: list[str], device: torch.device, dtype: torch.dtype) -> float:
    """Per document, full logits, full log_softmax: seconds for all documents."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    seqs = [torch.tensor([[tokenizer.bos_token_id, *tokenizer(d, add_special_tokens=False).input_ids]]) for d in docs]
    sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        for seq in seqs:
            seq = seq.to(device)
            logp = torch.log_softmax(model(seq).logits.float()[0, :-1], dim=-1)
            float(logp.gather(1, seq[0, 1:, None]).mean())
    sync(device)
    del model
    return time.perf_counter() - started


def miniplm_loop(model_dir: Path, token_stream: list[int], device: torch.device) -> tuple[float, int]:
    """MiniPLM's scorer: fp16, packed 1,025-token chunks, fixed batches of 16, full logits. Returns
    (seconds, tokens scored)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    chunks = torch.tensor(token_stream[: len(token_stream) // MINIPLM_CHUNK * MINIPLM_CHUNK]).view(-1, MINIPLM_CHUNK)
    sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        for batch in chunks.split(MINIPLM_BATCH):
            batch = batch.to(device)
            logits = model(batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
            loss.view(batch.shape[0], -1).mean(-1).cpu()
            del logits, loss
    sync(device)
    del model
    return time.perf_counter() - started, chunks.numel() - chunks.shape[0]


def attention_kernels(engine: ScoringEngine, docs: list[str]) -> str:
    """Names of the attention kernels one engine call launched (profiler), to see flash vs math."""
    if engine.teacher.device.type != "cuda":
        return "n/a (not on CUDA)"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.score(docs)
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    hits = sorted(n for n in names if any(k in n.lower() for k in ("flash", "fmha", "attention", "efficient", "sdpa", "softmax")))
    return "; ".join(h[:90] for h in hits) or "none matched"


def host_waits(engine: ScoringEngine, docs: list[str]) -> str:
    """How often the host waited for the device during one call (torch's CUDA sync debug mode)."""
    if engine.teacher.device.type != "cuda":
        return "n/a (not on CUDA)"
    before = engine.stats.batches
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.score(docs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    batches = engine.stats.batches - before
    where = sorted({str(w.message).splitlines()[0][:80] for w in caught})
    return f"{len(caught)} synchronizing calls in {batches} batches ({'; '.join(where) or 'none'})"


def speed(plan: Plan, tokenizer: Any, tmp: Path, report: list[str], device: torch.device) -> None:
    big = save_big(plan, tokenizer, tmp)
    mid = save_random_llama(tmp / "ref", tokenizer, vocab_size=plan.vocab, max_positions=4096, seed=2, **plan.mid)
    docs = make_documents(tokenizer, plan.docs, plan.longest, seed=0)
    counts = [len(x) for x in tokenizer(docs, add_special_tokens=False).input_ids]
    tokens = sum(counts)
    window = min(2048, plan.longest)
    flops = forward_flops(big, counts, window) + forward_flops(mid, counts, window)
    peak = matmul_peak(torch.bfloat16 if device.type == "cuda" else torch.float32, device, 8192 if device.type == "cuda" else 512)
    report += ["## Throughput", "", f"Teacher {plan.big}, reference {plan.mid}, vocabulary {plan.vocab:,}; {len(docs)} documents, "
               f"{tokens:,} tokens ({min(counts)}..{max(counts)} each). Matmul peak measured here: {peak / 1e12:,.1f} TFLOP/s "
               f"({'bf16' if device.type == 'cuda' else 'fp32'}).", "",
               "| path | tokens/s | MFU | peak GPU memory | notes |", "|---|---|---|---|---|"]

    def row(name: str, secs: float, n_tokens: int, share: float, notes: str) -> None:
        mfu = flops * share / secs / peak
        report.append(f"| {name} | {n_tokens / secs:,.0f} | {mfu:.1%} | {peak_memory(device)} | {notes} |")
        print(report[-1], flush=True)

    for budget in plan.budgets:
        reset_peak(device)
        engine = ScoringEngine.from_pretrained(big, mid, EngineConfig(device=plan.device, max_length=window, token_budget=budget))
        engine.score(docs[:8])  # warm-up: kernels, allocator
        engine.stats.__init__()  # type: ignore[misc]
        reset_peak(device)
        sync(device)
        started = time.perf_counter()
        engine.score(docs)
        sync(device)
        secs = time.perf_counter() - started
        row(f"engine, token budget {budget:,}", secs, tokens, 1.0,
            f"{engine.fingerprint.dtype}, padding {engine.stats.padding_fraction:.1%}, {engine.stats.batches} batches, "
            f"{1 - engine.stats.forward_seconds / engine.stats.seconds:.1%} of score() outside the batch loop "
            "(tokenizing, windowing, batching)")
        if budget == plan.budgets[0]:
            probe = docs[: max(8, len(docs) // 16)]
            kernels, waits = attention_kernels(engine, probe), host_waits(engine, probe)
        del engine
        free(device)

    subset = docs[: plan.plain_docs]
    share = sum(counts[: plan.plain_docs]) / tokens
    reset_peak(device)
    plain_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    secs = plain_loop(big, tokenizer, subset, device, plain_dtype) + plain_loop(mid, tokenizer, subset, device, plain_dtype)
    row("plain HF loop, per document", secs, sum(counts[: plan.plain_docs]), share, f"first {len(subset)} documents, {str(plain_dtype).removeprefix('torch.')}")
    free(device)

    stream = [t for ids in tokenizer(docs, add_special_tokens=False).input_ids for t in (tokenizer.eos_token_id, *ids)]
    reset_peak(device)
    t_secs, scored = miniplm_loop(big, stream, device)
    r_secs, _ = miniplm_loop(mid, stream, device)
    # MiniPLM attends across document boundaries in 1,024-token windows: count its FLOPs on its own
    # chunks, not on the engine's per-document windows.
    chunk_flops = forward_flops(big, [MINIPLM_CHUNK - 1] * (scored // (MINIPLM_CHUNK - 1)), MINIPLM_CHUNK) + forward_flops(
        mid, [MINIPLM_CHUNK - 1] * (scored // (MINIPLM_CHUNK - 1)), MINIPLM_CHUNK)
    secs = t_secs + r_secs
    report.append(f"| MiniPLM-style: fp16, 16 x 1,025 packed chunks, full logits | {scored / secs:,.0f} | "
                  f"{chunk_flops / secs / peak:.1%} | {peak_memory(device)} | chunks cross document boundaries |")
    print(report[-1], flush=True)
    report += ["", f"Attention kernels in one engine call: {kernels}", "", f"Host waits for the device: {waits}", ""]


def save_big(plan: Plan, tokenizer: Any, tmp: Path) -> Path:
    """The 1.7B-class teacher, initialised on the device (seconds, not minutes on the host)."""
    with torch.device(plan.device):
        return save_random_llama(tmp / "big", tokenizer, vocab_size=plan.vocab, max_positions=4096, seed=1, **plan.big)


def peak_memory(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown table written here")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks that every step runs")
    args = parser.parse_args()
    plan = DRY if args.dry_run else H200
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the script on a CPU")
    device = torch.device(plan.device)
    what = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    report = [f"# GPU scoring benchmark{' (dry run: tiny shapes on the CPU, figures meaningless)' if args.dry_run else ''}", "",
              f"{what}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    started = time.perf_counter()
    tokenizer = build_tokenizer(vocab_size=2000, extra_text=" ".join(__doc__.split()) * 20)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            parity(plan, tokenizer, Path(tmp), report)
            print("\n".join(report), flush=True)
            speed(plan, tokenizer, Path(tmp), report, device)
    finally:  # what was measured before a failure is still worth having
        report.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
        args.out.write_text("\n".join(report) + "\n")
        print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
