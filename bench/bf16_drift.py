"""How far bf16 scores move from fp32 on real text with a real pair (rank correlation, top-50% overlap).

    python bench/bf16_drift.py --teacher DIR --reference DIR [--docs 96] [--max-length 128] INPUT...

Runs both dtypes on the same documents (each truncated to one window of --max-length tokens so the
comparison is affordable where bf16 is emulated) and prints Spearman's rho of the scores, the overlap of
the top-50% selections, the largest absolute score difference and each dtype's tokens/s.
"""

from __future__ import annotations

import os
import sys

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import time
from itertools import islice

import numpy as np

from corpus.readers import read_documents
from scoring import EngineConfig, ScoringEngine
from scoring.models import cpu_has_native_bf16


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def top_half_overlap(a: np.ndarray, b: np.ndarray) -> float:
    k = len(a) // 2
    return len(set(np.argsort(-a)[:k].tolist()) & set(np.argsort(-b)[:k].tolist())) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("inputs", nargs="+")
    args = parser.parse_args()
    texts = [d.text for path in args.inputs for d in read_documents(path) if d.text and d.text.strip()]
    texts = list(islice(texts[:: max(1, len(texts) // args.docs)], args.docs))
    results = {}
    for dtype in ("float32", "bfloat16"):
        engine = ScoringEngine.from_pretrained(
            args.teacher, args.reference, EngineConfig(dtype=dtype, max_length=args.max_length, token_budget=4096)
        )
        # One window per document: truncate to the window so every token counted is scored in one pass.
        ids = engine.tokenize(texts)
        clipped = [engine.tokenizer.decode(x[: args.max_length]) for x in ids]
        started = time.perf_counter()
        scores = engine.score(clipped)
        secs = time.perf_counter() - started
        results[dtype] = (np.array([s.score for s in scores], dtype=float), engine.stats.tokens / secs)
    fp32, bf16 = results["float32"][0], results["bfloat16"][0]
    ok = np.isfinite(fp32) & np.isfinite(bf16)
    print(f"documents: {int(ok.sum())} (one window of <= {args.max_length} tokens each), native bf16: {cpu_has_native_bf16()}")
    print(f"fp32: {results['float32'][1]:,.0f} tokens/s; bf16: {results['bfloat16'][1]:,.0f} tokens/s")
    print(f"bf16 vs fp32 scores: Spearman {spearman(fp32[ok], bf16[ok]):.4f}, top-50% overlap "
          f"{top_half_overlap(fp32[ok], bf16[ok]):.1%}, max |diff| {np.abs(fp32[ok] - bf16[ok]).max():.4f} nats "
          f"(score spread: std {fp32[ok].std():.3f})")


if __name__ == "__main__":
    main()
