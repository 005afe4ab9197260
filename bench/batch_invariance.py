"""How far a document's score moves with its batch-mates, per dtype, and what `batch_invariant` costs.

    python bench/batch_invariance.py [--teacher DIR --reference DIR | --tiny] [--docs 16] [--max-length 128]
                                     [--dtypes float32,bfloat16] [--threads N] [INPUT...]

Without --teacher/--reference it uses the demo pair under $REWEIGH_HOME (built by `reweigh demo`), and
without INPUT the demo corpus; --tiny uses the tests' random-weight pair instead. Each document is cut to
one window of a seeded random length up to --max-length tokens (bf16, emulated on CPUs without
AVX512-BF16/AMX, stays affordable; the mixed lengths make batches pad, as real traffic does).

The same documents are scored, per dtype:
  together  one engine call (the way a rewrite chunk is batched),
  alone     one call per document (a lone HTTP request),
  groups    seeded random groups of 4 (the service's micro-batches),
and the largest and median |score difference| against `together` are printed, with the overlap of the
top-50% selections. Then `batch_invariant=True` scores the same documents together and alone (the
two must agree bit for bit) and its wall time is compared with the batched call's.
"""

from __future__ import annotations

import os
import sys

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs

import argparse
import random
import tempfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from corpus.readers import read_documents
from scoring import EngineConfig, ScoringEngine
from scoring.hardware import cpu_description


def pick_pair(args: argparse.Namespace) -> tuple[Path, Path, list[str]]:
    if args.tiny:
        from tests.synthetic import build_tokenizer, save_random_llama

        root = Path(tempfile.mkdtemp(prefix="batch-invariance-"))
        tok = build_tokenizer()
        teacher = save_random_llama(root / "teacher", tok, hidden_size=64, num_layers=2, seed=1)
        reference = save_random_llama(root / "reference", tok, hidden_size=32, num_layers=1, num_heads=2, seed=2)
        pair = (teacher, reference)
    elif args.teacher and args.reference:
        pair = (Path(args.teacher), Path(args.reference))
    else:
        from embedded import paths

        pair = (paths.teacher_dir(), paths.reference_dir())
        if not (pair[0] / "config.json").is_file() or not (pair[1] / "config.json").is_file():
            raise SystemExit(f"no demo pair under {paths.home()}: run `reweigh demo --no-serve` or pass --tiny")
    inputs = list(args.inputs)
    if not inputs:
        from embedded.corpus import subset_files

        inputs = [str(p) for p in subset_files()[0]]
    texts = [d.text for path in inputs for d in read_documents(path) if d.text and d.text.strip()]
    # Every k-th document: a mix of sources and lengths rather than the first file's.
    return pair[0], pair[1], list(islice(texts[:: max(1, len(texts) // args.docs)], args.docs))


def scores_of(engine: ScoringEngine, groups: Sequence[Sequence[int]], texts: Sequence[str]) -> np.ndarray:
    out = np.full(len(texts), np.nan)
    for group in groups:
        for i, s in zip(group, engine.score([texts[i] for i in group]), strict=True):
            out[i] = s.score
    return out


def top_half(x: np.ndarray) -> set[int]:
    return set(np.argsort(-x, kind="stable")[: len(x) // 2].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher")
    parser.add_argument("--reference")
    parser.add_argument("--tiny", action="store_true", help="the tests' random-weight pair")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("inputs", nargs="*")
    args = parser.parse_args()
    teacher, reference, texts = pick_pair(args)
    print(f"{cpu_description()}; torch {torch.__version__}")
    print(f"pair: {teacher} / {reference}; {len(texts)} documents, each cut to 16..{args.max_length} tokens")
    n = len(texts)
    order = list(range(n))
    random.Random(0).shuffle(order)
    layouts = {"together": [list(range(n))], "alone": [[i] for i in range(n)]}
    layouts["groups of 4"] = [order[k : k + 4] for k in range(0, n, 4)]
    for dtype in args.dtypes.split(","):
        common = {"dtype": dtype, "device": "cpu", "max_length": args.max_length, "num_threads": args.threads}
        engine = ScoringEngine.from_pretrained(teacher, reference, EngineConfig(**common))
        # Seeded lengths from 16 tokens to a full window: batches mix widths, as real traffic does
        # (equal widths hide most of the effect: then only the row count differs between layouts).
        lengths = random.Random(1)
        ids = engine.tokenize(texts)
        clipped = [engine.tokenizer.decode(x[: lengths.randint(16, args.max_length)]) for x in ids]
        timed: dict[str, tuple[np.ndarray, float]] = {}
        for name, groups in layouts.items():
            started = time.perf_counter()
            timed[name] = (scores_of(engine, groups, clipped), time.perf_counter() - started)
        base = timed["together"][0]
        print(f"\n{engine.fingerprint.dtype} (batched, the default): score std {np.nanstd(base):.3f} nats")
        for name in ("alone", "groups of 4"):
            diff = np.abs(timed[name][0] - base)
            overlap = len(top_half(timed[name][0]) & top_half(base)) / max(1, n // 2)
            print(
                f"  {name:12} vs together: max |diff| {np.nanmax(diff):.2e}, median {np.nanmedian(diff):.2e} nats; "
                f"top-50% overlap {overlap:.0%}"
            )
        invariant = ScoringEngine.from_pretrained(
            teacher, reference, EngineConfig(**common, batch_invariant=True)
        )
        started = time.perf_counter()
        inv_together = scores_of(invariant, layouts["together"], clipped)
        inv_seconds = time.perf_counter() - started
        inv_alone = scores_of(invariant, layouts["alone"], clipped)
        same = bool(np.array_equal(inv_together, inv_alone))
        print(
            f"  batch_invariant: together == alone bit for bit: {same}; max |diff| vs batched "
            f"{np.nanmax(np.abs(inv_together - base)):.2e} nats"
        )
        batched_seconds = timed["together"][1]
        print(
            f"  time for all {n} together: batched {batched_seconds:.2f} s, batch_invariant {inv_seconds:.2f} s "
            f"({inv_seconds / batched_seconds:.2f}x); alone (one call each, batched engine) {timed['alone'][1]:.2f} s"
        )


if __name__ == "__main__":
    main()
