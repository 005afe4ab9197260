"""A miniature MiniPLM replication: does difference-score selection teach a student more per token?

A pool mixes clean documents (Python docs, Shakespeare, the KJV Bible: the committed demo corpus)
with the same number of noisy ones, five kinds in equal shares (see embedded/noise.py: shuffled
words, repeated boilerplate, random characters, near-duplicates of clean pool documents, MT-like
garbling). The demo pair scores the pool through the project's engine; then half the pool is chosen
by each method:

  (a) uniform       seeded random half
  (b) difference    top 50% by teacher - reference log-prob (MiniPLM's Difference Sampling)
  (c) reference-ppl top 50% by reference log-prob alone (lowest reference perplexity)
  (d) soft          weights clip(c * exp(score / T)) summing to half the pool, as repeat counts
  (o) oracle        the clean documents exactly (an upper bound, not a method)

and the same small student is trained from scratch for the same number of tokens on each subset
(cycling through it), then evaluated on held-out clean documents that no subset contains. Several
seeds vary the student's initialisation, its data order, the uniform draw and the soft draw.

    python bench/miniplm.py [--seeds 3] [--out bench/results/miniplm.md]
    python bench/miniplm.py --quick   # tiny random-weight pair and sizes: checks that it runs (CI)
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/miniplm.py`, this file's folder comes first on sys.path, where bench/scoring.py
# would shadow the `scoring` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.synthetic: random-weight pairs

import argparse
import dataclasses
import datetime
import logging
import math
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from corpus.sampler import SelectionConfig, hash_prefix, select
from embedded.noise import NOISE_KINDS, make_noise
from embedded.reference import ReferenceSpec
from scoring import EngineConfig, ScoreCache, ScoringEngine, content_hash

log = logging.getLogger("miniplm")

CLEAN = "clean"
KINDS = (CLEAN, *NOISE_KINDS)
METHODS = ("uniform", "difference", "reference-ppl", "soft", "oracle")
METHOD_LABELS = {
    "uniform": "(a) uniform",
    "difference": "(b) top-50% difference",
    "reference-ppl": "(c) top-50% lowest ref. ppl",
    "soft": "(d) soft weighting",
    "oracle": "(o) clean only (oracle)",
}


@dataclass(frozen=True)
class Sizes:
    heldout: int  # clean documents kept out of every subset, for evaluation
    clean: int  # clean documents in the pool
    per_noise: int  # documents of each noise kind in the pool
    doc_chars: int  # documents are cut to this many characters (at a line end when possible)
    student_layers: int
    student_width: int
    seq_len: int
    batch_rows: int
    train_tokens: int  # per student, whatever its subset
    ref_train_tokens: int  # the bench's own reference, trained on a noisy D_ref slice
    lr: float = 3e-3


# Small batches, many steps: at equal tokens, more updates take the student past unigram statistics,
# where what it reads starts to matter (96 steps of 1k tokens left every student near unigram loss).
FULL = Sizes(
    heldout=100,
    clean=200,
    per_noise=40,
    doc_chars=600,
    student_layers=2,
    student_width=128,
    seq_len=64,
    batch_rows=8,
    train_tokens=65_536,
    ref_train_tokens=131_072,
)
QUICK = Sizes(
    heldout=8,
    clean=20,
    per_noise=4,
    doc_chars=300,
    student_layers=1,
    student_width=32,
    seq_len=64,
    batch_rows=4,
    train_tokens=2_048,
    ref_train_tokens=2_560,
)


@dataclass
class Pool:
    texts: list[str]
    kinds: list[str]
    heldout: list[str]


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, ending at a line end when one is in the second half."""
    if len(text) <= limit:
        return text
    end = text.rfind("\n", limit // 2, limit)
    return text[: end if end > 0 else limit]


def mix(docs: Sequence[str], n_clean: int, per_noise: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """n_clean documents as they are plus per_noise of each noise kind made from the next ones,
    shuffled together: (texts, kinds)."""
    clean = list(docs[:n_clean])
    sources = docs[n_clean : n_clean + per_noise * len(NOISE_KINDS)]
    texts, kinds = list(clean), [CLEAN] * len(clean)
    for k, kind in enumerate(NOISE_KINDS):
        for j in range(per_noise):
            texts.append(make_noise(kind, sources[k * per_noise + j], rng.choice(clean), rng))
            kinds.append(kind)
    order = list(range(len(texts)))
    rng.shuffle(order)  # no method may profit from the order
    return [texts[i] for i in order], [kinds[i] for i in order]


def prepare(docs: Sequence[str], sizes: Sizes, need: int, rng: random.Random) -> list[str]:
    out = [cut(d, sizes.doc_chars) for d in docs if len(d) >= sizes.doc_chars // 3]
    rng.shuffle(out)
    if len(out) < need:
        raise SystemExit(f"need {need} clean documents, have {len(out)}")
    return out


def build_pool(clean_docs: Sequence[str], sizes: Sizes, seed: int = 0) -> Pool:
    """Held-out, clean and noisy documents from disjoint clean documents (a fixed seed: the pool is
    the same for every student seed, so that it is scored once)."""
    rng = random.Random(seed)
    n_noise = sizes.per_noise * len(NOISE_KINDS)
    docs = prepare(clean_docs, sizes, sizes.heldout + sizes.clean + n_noise, rng)
    texts, kinds = mix(docs[sizes.heldout :], sizes.clean, sizes.per_noise, rng)
    return Pool(texts, kinds, docs[: sizes.heldout])


def noisy_reference_slice(ref_docs: Sequence[str], sizes: Sizes, seed: int = 1) -> list[str]:
    """D_ref as MiniPLM has it: a random slice of the *same* (noisy) corpus, so that the reference
    learns what is easy and common there (boilerplate included), from D_ref documents only."""
    rng = random.Random(seed)
    per_noise = len(ref_docs) // (2 * len(NOISE_KINDS))
    docs = prepare(ref_docs, sizes, 1, rng)
    per_noise = min(per_noise, len(docs) // (2 * len(NOISE_KINDS)))
    n_clean = len(docs) - per_noise * len(NOISE_KINDS)
    texts, _ = mix(docs, n_clean, per_noise, rng)
    return texts


@dataclass
class PoolScores:
    score: npt.NDArray[np.float64]
    teacher: npt.NDArray[np.float64]
    reference: npt.NDArray[np.float64]
    n_tokens: npt.NDArray[np.int64]
    ok: npt.NDArray[np.bool_]
    hashes: npt.NDArray[np.bytes_]


def score_pool(engine: ScoringEngine, texts: Sequence[str]) -> PoolScores:
    results = engine.score(list(texts))
    nan = float("nan")
    return PoolScores(
        score=np.array([r.score if r.ok else nan for r in results], dtype=np.float64),
        teacher=np.array([r.teacher_logprob if r.ok else nan for r in results], dtype=np.float64),
        reference=np.array([r.reference_logprob if r.ok else nan for r in results], dtype=np.float64),
        n_tokens=np.array([r.n_tokens for r in results], dtype=np.int64),
        ok=np.array([r.ok for r in results], dtype=bool),
        hashes=hash_prefix([content_hash(t) for t in texts]),
    )


def choose(method: str, scores: PoolScores, kinds: Sequence[str], seed: int) -> npt.NDArray[np.int64]:
    """Repeats per pool document: the selection step. (b)-(d) go through the project's sampler.

    The exact-duplicate guard is off for every method: the question is what the score does, and
    the noisy documents are built to differ byte-wise anyway.
    """
    n = len(kinds)
    keep = n // 2
    if method == "uniform":
        repeats = np.zeros(n, dtype=np.int64)
        repeats[np.random.default_rng(seed).choice(n, size=keep, replace=False)] = 1
        return repeats
    if method == "oracle":
        return np.array([1 if k == CLEAN else 0 for k in kinds], dtype=np.int64)
    if method in ("difference", "reference-ppl"):
        config = SelectionConfig(method="top-fraction", ratio=0.5, drop_duplicates=False)
        by = scores.score if method == "difference" else scores.reference
    elif method == "soft":
        config = SelectionConfig(method="soft", target_documents=keep, drop_duplicates=False)
        by = scores.score
    else:
        raise ValueError(f"unknown method {method!r}")
    selection = select(
        config,
        score=by,
        teacher_logprob=scores.teacher,
        n_tokens=scores.n_tokens,
        ok=scores.ok,
        content_hash=scores.hashes,
        seed=seed,
    )
    return selection.repeats


# --- the student ---------------------------------------------------------------------------------


class CompactVocab:
    """The student predicts only token ids that occur in the pool or the held-out set: the softmax
    over 49k ids would cost most of its compute. Every method shares this vocabulary."""

    def __init__(self, id_lists: Sequence[Sequence[int]], context_id: int) -> None:
        ids = sorted({context_id, *(i for ids in id_lists for i in ids)})
        self.size = len(ids)
        self.lookup = {token: k for k, token in enumerate(ids)}
        self.context = self.lookup[context_id]

    def stream(
        self, id_lists: Sequence[Sequence[int]], repeats: npt.NDArray[np.int64] | None = None
    ) -> list[int]:
        out: list[int] = []
        for j, ids in enumerate(id_lists):
            for _ in range(1 if repeats is None else int(repeats[j])):
                out.append(self.context)
                out.extend(self.lookup[i] for i in ids)
        return out


def build_student(sizes: Sizes, vocab: int, seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=sizes.student_width,
        intermediate_size=2 * sizes.student_width,
        num_hidden_layers=sizes.student_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=sizes.seq_len,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def blocks_of(stream: Sequence[int], seq_len: int) -> torch.Tensor:
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def train_student(stream: Sequence[int], vocab: int, sizes: Sizes, seed: int) -> torch.nn.Module:
    """Fixed steps of fixed size, whatever the subset: every method gets the same tokens."""
    model = build_student(sizes, vocab, seed)
    data = blocks_of(stream, sizes.seq_len)
    generator = torch.Generator().manual_seed(seed)
    steps = max(1, sizes.train_tokens // (sizes.batch_rows * sizes.seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=sizes.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    order, cursor = torch.randperm(len(data), generator=generator), 0
    model.train()
    for step in range(steps):
        lr = (
            sizes.lr
            * min(1.0, (step + 1) / warmup)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows: list[torch.Tensor] = []
        while len(rows) < sizes.batch_rows:
            if cursor == len(order):
                order, cursor = torch.randperm(len(data), generator=generator), 0
            rows.append(order[cursor])
            cursor += 1
        batch = data[torch.stack(rows)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()


def heldout_loss(model: torch.nn.Module, stream: Sequence[int], seq_len: int) -> float:
    """Mean next-token loss (nats) over every held-out token, in blocks like the training ones."""
    data = blocks_of(stream, seq_len)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(data), 16):
            batch = data[start : start + 16]
            loss = model(input_ids=batch, labels=batch).loss
            n = batch.shape[0] * (seq_len - 1)
            total, count = total + float(loss) * n, count + n
    return total / count


# --- assets --------------------------------------------------------------------------------------


def bench_reference_spec(sizes: Sizes) -> ReferenceSpec:
    return ReferenceSpec(seq_len=256, batch_rows=16, train_tokens=sizes.ref_train_tokens)


def real_assets(sizes: Sizes) -> tuple[Path, Path, list[str]]:
    """The demo teacher; a reference like the demo's but trained on a noisy D_ref slice (cached)."""
    from embedded import ensure_demo_assets, paths
    from embedded.corpus import Doc, read_jsonl_zst, write_jsonl_zst
    from embedded.reference import ensure_reference

    assets = ensure_demo_assets()
    texts = [row["text"] for path in assets.corpus_files for row in read_jsonl_zst(path)]
    ref_texts = [row["text"] for path in assets.ref_files for row in read_jsonl_zst(path)]
    bench_dir = paths.home() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    ref_file = bench_dir / "noisy-d-ref.jsonl.zst"
    noisy = [Doc(f"noisy-ref#{i}", t, "bench") for i, t in enumerate(noisy_reference_slice(ref_texts, sizes))]
    if not ref_file.is_file():  # rewritten only when absent: ensure_reference keys on its bytes
        write_jsonl_zst(noisy, ref_file, level=10)
    reference_dir = ensure_reference(
        assets.teacher_dir, [ref_file], bench_dir / "reference-noisy", bench_reference_spec(sizes)
    )
    return assets.teacher_dir, reference_dir, texts


def quick_assets(root: Path) -> tuple[Path, Path, list[str]]:
    """A random-weight teacher and a briefly trained reference on a tiny tokenizer: seconds, offline."""
    from embedded.corpus import read_jsonl_zst, subset_files
    from embedded.reference import train
    from tests.synthetic import build_tokenizer, save_random_llama

    scored, ref = subset_files()
    texts = [row["text"] for row in read_jsonl_zst(scored[0])][:200]
    ref_texts = [row["text"] for row in read_jsonl_zst(ref[0])][:20]
    tokenizer = build_tokenizer(vocab_size=400, extra_text="\n".join(ref_texts))
    teacher = save_random_llama(
        root / "teacher", tokenizer, hidden_size=64, num_layers=2, max_positions=256, seed=1
    )
    spec = ReferenceSpec(
        layers=1,
        width=32,
        heads=2,
        intermediate=64,
        seq_len=64,
        batch_rows=4,
        train_tokens=QUICK.ref_train_tokens,
    )
    model, _ = train(noisy_reference_slice(ref_texts, QUICK), tokenizer, spec, torch.device("cpu"))
    model.save_pretrained(root / "reference")
    tokenizer.save_pretrained(root / "reference")
    return teacher, root / "reference", texts


# --- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    started = time.monotonic()
    sizes = QUICK if args.quick else FULL
    if args.student_tokens:
        sizes = dataclasses.replace(sizes, train_tokens=args.student_tokens)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir, reference_dir, clean_docs = quick_assets(Path(tmp)) if args.quick else real_assets(sizes)
        timings["assets"] = time.monotonic() - started
        pool = build_pool(clean_docs, sizes)
        cache = None
        if not args.quick:
            from embedded import paths

            cache = ScoreCache(paths.home() / "bench" / "miniplm-scores.sqlite")
        engine = ScoringEngine.from_pretrained(teacher_dir, reference_dir, EngineConfig(), cache=cache)
        t0 = time.monotonic()
        scores = score_pool(engine, pool.texts)
        timings["scoring"] = time.monotonic() - t0
        tokenizer = engine.tokenizer
        context_id = engine.context_id
        pool_ids = tokenizer(pool.texts, add_special_tokens=False)["input_ids"]
        heldout_ids = tokenizer(pool.heldout, add_special_tokens=False)["input_ids"]
    vocab = CompactVocab([*pool_ids, *heldout_ids], context_id)
    heldout_stream = vocab.stream(heldout_ids)
    if args.student_threads:
        torch.set_num_threads(args.student_threads)
    seeds = list(range(args.seeds))
    losses: dict[str, list[float]] = {m: [] for m in METHODS}
    kept: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    clean_token_share: dict[str, list[float]] = {m: [] for m in METHODS}
    t0 = time.monotonic()
    for seed in seeds:
        for method in METHODS:
            repeats = choose(method, scores, pool.kinds, seed)
            stream = vocab.stream(pool_ids, repeats)
            model = train_student(stream, vocab.size, sizes, seed)
            loss = heldout_loss(model, heldout_stream, sizes.seq_len)
            losses[method].append(loss)
            kept[method].append(
                {
                    k: float(np.mean([r > 0 for r, kk in zip(repeats, pool.kinds, strict=True) if kk == k]))
                    for k in KINDS
                }
            )
            tokens = np.array([len(ids) for ids in pool_ids]) * repeats
            is_clean = np.array([k == CLEAN for k in pool.kinds])
            clean_token_share[method].append(float(tokens[is_clean].sum() / max(1, tokens.sum())))
            log.info(
                "seed %d %-14s held-out loss %.4f (%.0f s so far)", seed, method, loss, time.monotonic() - t0
            )
        timings["students"] = time.monotonic() - t0
        timings["total"] = time.monotonic() - started
        table = render(
            args, sizes, pool, scores, vocab.size, losses, kept, clean_token_share, timings, engine
        )
        if seed != seeds[-1]:
            # A long run leaves a usable table behind after every seed, marked as partial.
            args.out.write_text(table + f"\n(partial: {seed + 1} of {len(seeds)} seeds done)\n")
    return table


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def render(args, sizes, pool, scores, vocab_size, losses, kept, clean_token_share, timings, engine) -> str:  # type: ignore[no-untyped-def]
    base, _ = _mean_sd(losses["uniform"])
    n_seeds = len(losses["uniform"])
    lines = [
        f"## MiniPLM miniature replication{' (--quick: random-weight pair, tiny sizes; the numbers mean nothing)' if args.quick else ''}",
        "",
        f"{datetime.date.today().isoformat()} · {platform.machine()} · {os.cpu_count()} CPUs · torch {torch.__version__} "
        f"· {torch.get_num_threads()} threads · engine dtype {engine.fingerprint.dtype}",
        "",
        f"Pool: {pool.kinds.count(CLEAN)} clean + {len(pool.kinds) - pool.kinds.count(CLEAN)} noisy documents "
        f"({sizes.per_noise} each of {', '.join(NOISE_KINDS)}), {int(scores.n_tokens.sum())} tokens; each method keeps "
        f"half. Student: Llama {sizes.student_layers} layers x {sizes.student_width}, {vocab_size}-token compact "
        f"vocabulary, {sizes.train_tokens} training tokens each. Held-out: {len(pool.heldout)} clean documents. "
        f"{n_seeds} seeds: mean ± sample standard deviation.",
        "",
        "| selection | held-out loss (nats/token) | Δ vs uniform | perplexity | clean share of training tokens | "
        + " | ".join(f"kept: {k}" for k in KINDS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(KINDS),
    ]
    for method in METHODS:
        mean, sd = _mean_sd(losses[method])
        share = {k: statistics.fmean(d[k] for d in kept[method]) for k in KINDS}
        lines.append(
            f"| {METHOD_LABELS[method]} | {mean:.4f} ± {sd:.4f} | {mean - base:+.4f} | {math.exp(mean):.1f} | "
            f"{statistics.fmean(clean_token_share[method]):.0%} | "
            + " | ".join(f"{share[k]:.0%}" for k in KINDS)
            + " |"
        )
    by_kind = " · ".join(
        f"{k} {np.nanmean(scores.score[[kk == k for kk in pool.kinds]]):+.2f}" for k in KINDS
    )
    lines += [
        "",
        f"Mean difference score by kind (nats/token): {by_kind}.",
        f"Timings: assets {timings['assets']:.0f} s, scoring {timings['scoring']:.0f} s, "
        f"students {timings['students']:.0f} s, total {timings['total']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="tiny random-weight pair and sizes (CI: checks it runs)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="student seeds (default 3; --quick 2)")
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown table (default bench/results/miniplm[-quick].md)"
    )
    parser.add_argument(
        "--student-tokens", type=int, default=None, help="training tokens per student (default 65,536)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for scoring (default: torch's)"
    )
    parser.add_argument(
        "--student-threads",
        type=int,
        default=None,
        help="torch threads for the students (default: as scoring; 1 can be faster on a busy machine)",
    )
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (2 if args.quick else 3)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out = (
        args.out
        or Path(__file__).resolve().parent / "results" / f"miniplm{'-quick' if args.quick else ''}.md"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = run(args)
    args.out.write_text(table)
    print(table)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
