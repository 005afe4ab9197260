"""A miniature MiniPLM replication: does difference-score selection teach a student more per token?

A pool mixes clean documents (Linux docs, Python docs, Shakespeare, the KJV Bible: the full built
corpus when `python -m embedded.corpus build` has made it, else the committed subset) with noisy ones
of five kinds (embedded/noise.py: shuffled words, repeated boilerplate, random characters,
near-duplicates of clean pool documents, MT-like garbling). The demo pair scores the pool through the
project's engine; then half the pool is chosen by each method:

  (a) uniform              seeded random half
  (b) difference           top 50% by teacher - reference log-prob (MiniPLM's Difference Sampling)
  (b') difference, strat.  the same within each source: the mixture of sources stays as it was
  (c) reference-ppl        top 50% by reference log-prob (lowest reference perplexity)
  (e) teacher-ppl          top 50% by teacher log-prob (lowest teacher perplexity)
  (d) soft                 weights clip(c * exp(score / tau)), half the pool in expectation, as
                           repeat counts; tau is chosen on a clean validation split, never on held-out
  (o) oracle               the clean pool documents exactly (an upper bound, not a method)

and the same small student is trained from scratch for the same number of tokens on each subset
(cycling through it), then evaluated on held-out clean documents that no subset contains, overall
and per source, against the unigram entropy of the held-out text (a student not clearly below it has
learnt token frequencies only, and cannot tell subsets apart). Several seeds vary the student's
initialisation, its data order, the uniform draw and the soft draw. For (a) and (b) the held-out loss
is also taken along training: how many tokens uniform needs to match difference (MiniPLM's
compute-saving figure).

    python bench/miniplm.py [--seeds 3] [--out bench/results/miniplm.md]   # CPU mode
    python bench/miniplm.py --gpu                                           # ~20x larger, one CUDA device
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from corpus.sampler import SelectionConfig, hash_prefix, select
from embedded.noise import NOISE_KINDS, make_noise
from embedded.reference import DEMO_REFERENCE, ReferenceSpec
from scoring import EngineConfig, ScoreCache, ScoringEngine, content_hash
from scoring.hardware import cpu_description

log = logging.getLogger("miniplm")

CLEAN = "clean"
KINDS = (CLEAN, *NOISE_KINDS)
METHODS = ("uniform", "difference", "difference-stratified", "reference-ppl", "teacher-ppl", "soft", "oracle")
METHOD_LABELS = {
    "uniform": "(a) uniform",
    "difference": "(b) top-50% difference",
    "difference-stratified": "(b') top-50% difference, per source",
    "reference-ppl": "(c) top-50% lowest ref. ppl",
    "teacher-ppl": "(e) top-50% lowest teacher ppl",
    "soft": "(d) soft weighting",
    "oracle": "(o) clean only (oracle)",
}
# The curves run uniform and difference to this multiple of the budget, on one schedule shared by
# both: they answer "how many tokens does uniform need to match difference?" beyond the budget,
# where that answer lies if difference helps, with the same learning rate at every point of each.
CURVE_MULTIPLE = 3


@dataclass(frozen=True)
class Sizes:
    heldout: int  # clean documents kept out of every subset, for evaluation
    validation: int  # clean documents kept out of every subset, for choosing tau
    clean: int  # clean documents in the pool
    per_noise: int  # documents of each noise kind in the pool
    doc_chars: int  # documents are cut to this many characters (at a line end when possible)
    student_layers: int
    student_width: int
    seq_len: int
    batch_rows: int
    train_tokens: int  # per student, whatever its subset
    student_vocab: int  # the most frequent token ids the student predicts (the rest share one id)
    ref_train_tokens: int  # the bench's own reference, adapted on a noisy D_ref slice
    curve_points: int = 8  # held-out evaluations per budget of training along each curve (CURVE_MULTIPLE x as many)
    taus: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    lr: float = 3e-3
    warmup_steps: int = 64  # the same for every run, whatever its length: 12 steps (1/20 of 256) let some seeds diverge


# CPU mode: 5,000 clean documents (the full corpus; the committed subset has ~1,100 usable) cut to
# ~60 tokens, so that scoring them with the lens pair stays under an hour on 2 cores; students on the
# 4,096 most frequent ids, in batches of 8 rows: 256 steps (64 of them warm-up), which took them
# ~0.4 nats/token below the held-out text's unigram entropy where 128 steps of 16 rows left them at it.
CPU = Sizes(
    heldout=300,
    validation=200,
    clean=5_000,
    per_noise=200,
    doc_chars=250,
    student_layers=2,
    student_width=128,
    seq_len=128,
    batch_rows=8,
    train_tokens=262_144,
    student_vocab=4_096,
    ref_train_tokens=131_072,
)
# --gpu: ~20x the CPU run's work on one device (more documents, a larger student, 16x the tokens).
GPU = Sizes(
    heldout=1_000,
    validation=500,
    clean=16_000,
    per_noise=800,
    doc_chars=800,
    student_layers=4,
    student_width=256,
    seq_len=256,
    batch_rows=32,
    train_tokens=4_194_304,
    student_vocab=16_384,
    ref_train_tokens=262_144,
    curve_points=16,
    lr=2e-3,
)
QUICK = Sizes(
    heldout=8,
    validation=6,
    clean=20,
    per_noise=4,
    doc_chars=300,
    student_layers=1,
    student_width=32,
    seq_len=64,
    batch_rows=4,
    train_tokens=2_048,
    student_vocab=512,
    ref_train_tokens=2_560,
    curve_points=2,
    taus=(0.5, 1.0),
)


@dataclass
class Pool:
    texts: list[str]
    kinds: list[str]
    sources: list[str]  # the clean document's source; a noisy one's is the source it was made from
    heldout: list[str]
    heldout_sources: list[str]
    validation: list[str]


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, ending at a line end when one is in the second half."""
    if len(text) <= limit:
        return text
    end = text.rfind("\n", limit // 2, limit)
    return text[: end if end > 0 else limit]


Sourced = tuple[str, str]  # (text, source)


def mix(
    docs: Sequence[Sourced], n_clean: int, per_noise: int, rng: random.Random
) -> tuple[list[str], list[str], list[str]]:
    """n_clean documents as they are plus per_noise of each noise kind made from the next ones,
    shuffled together: (texts, kinds, sources)."""
    clean = list(docs[:n_clean])
    makers = docs[n_clean : n_clean + per_noise * len(NOISE_KINDS)]
    texts, kinds, sources = [t for t, _ in clean], [CLEAN] * len(clean), [s for _, s in clean]
    for k, kind in enumerate(NOISE_KINDS):
        for j in range(per_noise):
            text, source = makers[k * per_noise + j]
            texts.append(make_noise(kind, text, rng.choice(clean)[0], rng))
            kinds.append(kind)
            sources.append(source)
    order = list(range(len(texts)))
    rng.shuffle(order)  # no method may profit from the order
    return [texts[i] for i in order], [kinds[i] for i in order], [sources[i] for i in order]


def prepare(docs: Sequence[Sourced], sizes: Sizes, need: int, rng: random.Random) -> list[Sourced]:
    out = [(cut(t, sizes.doc_chars), s) for t, s in docs if len(t) >= sizes.doc_chars // 3]
    rng.shuffle(out)
    if len(out) < need:
        log.warning("need %d clean documents, have %d: the pool is smaller than the sizes ask", need, len(out))
    return out


def build_pool(clean_docs: Sequence[Sourced], sizes: Sizes, seed: int = 0) -> Pool:
    """Held-out, validation, clean and noisy documents from disjoint clean documents (a fixed seed:
    the pool is the same for every student seed, so that it is scored once). With fewer documents
    than the sizes ask, the clean pool shrinks (logged and printed with the table)."""
    rng = random.Random(seed)
    n_noise = sizes.per_noise * len(NOISE_KINDS)
    docs = prepare(clean_docs, sizes, sizes.heldout + sizes.validation + sizes.clean + n_noise, rng)
    heldout, validation = docs[: sizes.heldout], docs[sizes.heldout : sizes.heldout + sizes.validation]
    rest = docs[sizes.heldout + sizes.validation :]
    n_clean = min(sizes.clean, len(rest) - n_noise)
    if n_clean < 1:
        raise SystemExit(f"{len(docs)} usable clean documents: too few for these sizes")
    texts, kinds, sources = mix(rest, n_clean, sizes.per_noise, rng)
    return Pool(
        texts, kinds, sources, [t for t, _ in heldout], [s for _, s in heldout], [t for t, _ in validation]
    )


def noisy_reference_slice(ref_docs: Sequence[str], sizes: Sizes, seed: int = 1) -> list[str]:
    """D_ref as MiniPLM has it: a random slice of the *same* (noisy) corpus, so that the reference
    learns what is easy and common there (boilerplate included), from D_ref documents only."""
    rng = random.Random(seed)
    docs = prepare([(t, "ref") for t in ref_docs], sizes, 1, rng)
    per_noise = len(docs) // (2 * len(NOISE_KINDS))
    n_clean = len(docs) - per_noise * len(NOISE_KINDS)
    texts, _, _ = mix(docs, n_clean, per_noise, rng)
    return texts


@dataclass
class PoolScores:
    score: npt.NDArray[np.float64]
    teacher: npt.NDArray[np.float64]
    reference: npt.NDArray[np.float64]
    n_tokens: npt.NDArray[np.int64]
    ok: npt.NDArray[np.bool_]
    hashes: npt.NDArray[np.bytes_]


def score_pool(engine: ScoringEngine, texts: Sequence[str], loads: list[float], chunk: int = 250) -> PoolScores:
    """In chunks, each one written to the engine's cache when done: a long run shows its progress
    and an interrupted one resumes where it stopped instead of rescoring."""
    results = []
    started = time.monotonic()
    for start in range(0, len(texts), chunk):
        results.extend(engine.score(list(texts[start : start + chunk])))
        elapsed = time.monotonic() - started
        loads.append(os.getloadavg()[0])
        log.info(
            "scored %d/%d pool documents in %.0f s (%d cached so far this run)",
            len(results), len(texts), elapsed, engine.stats.cache_hits,
        )
    nan = float("nan")
    return PoolScores(
        score=np.array([r.score if r.ok else nan for r in results], dtype=np.float64),
        teacher=np.array([r.teacher_logprob if r.ok else nan for r in results], dtype=np.float64),
        reference=np.array([r.reference_logprob if r.ok else nan for r in results], dtype=np.float64),
        n_tokens=np.array([r.n_tokens for r in results], dtype=np.int64),
        ok=np.array([r.ok for r in results], dtype=bool),
        hashes=hash_prefix([content_hash(t) for t in texts]),
    )


def _select(
    config: SelectionConfig, by: npt.NDArray[np.float64], scores: PoolScores, seed: int, groups: Sequence[str] | None = None
) -> npt.NDArray[np.int64]:
    return select(
        config,
        score=by,
        teacher_logprob=scores.teacher,
        n_tokens=scores.n_tokens,
        ok=scores.ok,
        content_hash=scores.hashes,
        seed=seed,
        groups=None if groups is None else np.array(groups),
    ).repeats


def choose(method: str, scores: PoolScores, pool: Pool, seed: int, tau: float = 1.0) -> npt.NDArray[np.int64]:
    """Repeats per pool document: the selection step. All but (a) and (o) go through the project's
    sampler; (b') is its stratified selection (`stratify_by`: the top half of each source).

    The exact-duplicate guard is off for every method: the question is what the score does, and
    the noisy documents are built to differ byte-wise anyway.
    """
    n = len(pool.kinds)
    if method == "uniform":
        repeats = np.zeros(n, dtype=np.int64)
        repeats[np.random.default_rng(seed).choice(n, size=n // 2, replace=False)] = 1
        return repeats
    if method == "oracle":
        return np.array([1 if k == CLEAN else 0 for k in pool.kinds], dtype=np.int64)
    top_half = SelectionConfig(method="top-fraction", ratio=0.5, drop_duplicates=False)
    if method == "difference":
        return _select(top_half, scores.score, scores, seed)
    if method == "reference-ppl":
        return _select(top_half, scores.reference, scores, seed)
    if method == "teacher-ppl":
        return _select(top_half, scores.teacher, scores, seed)
    if method == "difference-stratified":
        stratified = top_half.model_copy(update={"stratify_by": "source"})
        return _select(stratified, scores.score, scores, seed, pool.sources)
    if method == "soft":
        soft = SelectionConfig(method="soft", temperature=tau, target_documents=n // 2, drop_duplicates=False)
        return _select(soft, scores.score, scores, seed)
    raise ValueError(f"unknown method {method!r}")


# --- the student ---------------------------------------------------------------------------------


class CompactVocab:
    """The student predicts only token ids that occur in the pool or the evaluation sets, and of
    those only the `limit` most frequent, each other id read as one shared "rare" id: the softmax
    over 49k ids (or the ~21k the CPU pool uses) would cost most of its compute. Every method shares
    this vocabulary, and the unigram entropy is taken on the same mapped text."""

    def __init__(self, id_lists: Sequence[Sequence[int]], context_id: int, limit: int | None = None) -> None:
        counts = Counter(i for ids in id_lists for i in ids)
        # Most frequent first, ties by id: the same vocabulary on every run. Two places are left for
        # the context id and the shared rare id.
        kept = sorted(counts, key=lambda i: (-counts[i], i))[: None if limit is None else limit - 2]
        ids = sorted({context_id, *kept})
        self.size = len(ids) + 1
        self.rare = len(ids)
        self.lookup = {token: k for k, token in enumerate(ids)}
        self.context = self.lookup[context_id]

    def stream(
        self, id_lists: Sequence[Sequence[int]], repeats: npt.NDArray[np.int64] | None = None
    ) -> list[int]:
        out: list[int] = []
        for j, ids in enumerate(id_lists):
            for _ in range(1 if repeats is None else int(repeats[j])):
                out.append(self.context)
                out.extend(self.lookup.get(i, self.rare) for i in ids)
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


Curve = list[tuple[int, float]]  # (training tokens so far, held-out loss)


def train_student(
    stream: Sequence[int],
    vocab: int,
    sizes: Sizes,
    seed: int,
    device: torch.device,
    curve_on: torch.Tensor | None = None,
) -> tuple[torch.nn.Module, Curve]:
    """Fixed steps of fixed size, whatever the subset: every method gets the same tokens. With
    `curve_on` (held-out blocks), the loss on it is taken `sizes.curve_points` times along the way
    (points of one cosine schedule, not what a run stopped there would reach: its rate would have decayed)."""
    model = build_student(sizes, vocab, seed).to(device)
    data = blocks_of(stream, sizes.seq_len)
    generator = torch.Generator().manual_seed(seed)
    steps = max(1, sizes.train_tokens // (sizes.batch_rows * sizes.seq_len))
    every = max(1, steps // sizes.curve_points)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sizes.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = min(steps, sizes.warmup_steps)
    order, cursor = torch.randperm(len(data), generator=generator), 0
    curve: Curve = []
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
        batch = data[torch.stack(rows)].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if curve_on is not None and ((step + 1) % every == 0 or step == steps - 1):
            tokens = (step + 1) * sizes.batch_rows * sizes.seq_len
            total, count = block_loss(model.eval(), curve_on, device)
            curve.append((tokens, total / max(1, count)))
            model.train()
    return model.eval(), curve


def block_loss(model: torch.nn.Module, data: torch.Tensor, device: torch.device) -> tuple[float, int]:
    """(summed next-token loss in nats, predicted tokens) over blocks."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(data), 16):
            batch = data[start : start + 16].to(device)
            loss = model(input_ids=batch, labels=batch).loss
            n = batch.shape[0] * (batch.shape[1] - 1)
            total, count = total + float(loss) * n, count + n
    return total, count


def unigram_entropy(stream: Sequence[int]) -> float:
    """Entropy (nats/token) of the text's own token frequencies: what a model that knows which
    tokens are common, and nothing of context, reaches at best."""
    counts = np.bincount(np.asarray(stream, dtype=np.int64)).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --- assets --------------------------------------------------------------------------------------


def bench_reference_spec(sizes: Sizes, recipe: str) -> ReferenceSpec:
    """The bench's reference, built on its noisy D_ref slice: `lens` is the demo's recipe (its fit needs no
    noisy copies: the slice already carries the noise), `scratch` the small model the demo used before."""
    if recipe == "scratch":
        return ReferenceSpec(train_tokens=sizes.ref_train_tokens)
    return dataclasses.replace(DEMO_REFERENCE, noise_share=0.0)


def real_assets(sizes: Sizes, recipe: str) -> tuple[Path, Path, list[Sourced], str]:
    """The demo teacher; a reference like the demo's but built on a noisy D_ref slice (cached); the
    clean documents (full corpus when built) and a line saying which."""
    from embedded import ensure_demo_assets, paths
    from embedded.corpus import Doc, full_corpus_files, read_jsonl_zst, write_jsonl_zst
    from embedded.reference import ensure_reference

    assets = ensure_demo_assets()
    full = full_corpus_files()
    files, origin = (full[0], "the full built corpus") if full else (assets.corpus_files, "the committed subset (run `python -m embedded.corpus build` for the full corpus)")
    docs = [(row["text"], row["source"]) for path in files for row in read_jsonl_zst(path)]
    ref_texts = [row["text"] for path in assets.ref_files for row in read_jsonl_zst(path)]
    bench_dir = paths.home() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    ref_file = bench_dir / "noisy-d-ref.jsonl.zst"
    noisy = [Doc(f"noisy-ref#{i}", t, "bench") for i, t in enumerate(noisy_reference_slice(ref_texts, sizes))]
    if not ref_file.is_file():  # rewritten only when absent: ensure_reference keys on its bytes
        write_jsonl_zst(noisy, ref_file, level=10)
    reference_dir = ensure_reference(
        assets.teacher_dir, [ref_file], bench_dir / f"reference-noisy-{recipe}", bench_reference_spec(sizes, recipe)
    )
    return assets.teacher_dir, reference_dir, docs, f"clean documents from {origin}"


def quick_assets(root: Path) -> tuple[Path, Path, list[Sourced], str]:
    """A random-weight teacher and a briefly trained reference on a tiny tokenizer: seconds, offline."""
    from embedded.corpus import read_jsonl_zst, subset_files
    from embedded.reference import train
    from tests.synthetic import build_tokenizer, save_random_llama

    scored, ref = subset_files()
    docs = [(row["text"], row["source"]) for row in read_jsonl_zst(scored[0])][:200]
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
    return teacher, root / "reference", docs, "clean documents from the committed subset"


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    losses: dict[str, list[float]]  # overall held-out loss per seed
    by_source: dict[str, list[dict[str, float]]]
    kept: dict[str, list[dict[str, float]]]
    clean_token_share: dict[str, list[float]]
    curves: dict[str, list[Curve]]
    tau_losses: dict[float, float]  # validation loss per tau (seed 0)
    tau: float


def evaluate(model: torch.nn.Module, blocks_by_source: dict[str, torch.Tensor], device: torch.device) -> tuple[float, dict[str, float]]:
    totals = {s: block_loss(model, b, device) for s, b in blocks_by_source.items()}
    overall = sum(t for t, _ in totals.values()) / max(1, sum(c for _, c in totals.values()))
    return overall, {s: t / max(1, c) for s, (t, c) in totals.items()}


def run(args: argparse.Namespace) -> str:
    started = time.monotonic()
    sizes = QUICK if args.quick else GPU if args.gpu else CPU
    if args.student_tokens:
        sizes = dataclasses.replace(sizes, train_tokens=args.student_tokens)
    if args.pool_clean:
        # Noise keeps its share of the pool: each kind scales with the clean documents.
        per_noise = max(1, round(sizes.per_noise * args.pool_clean / sizes.clean))
        sizes = dataclasses.replace(sizes, clean=args.pool_clean, per_noise=per_noise)
    device = torch.device("cuda" if args.gpu else "cpu")
    timings: dict[str, float] = {}
    loads: list[float] = []  # 1-min load averages along the run: a busy machine slows every phase
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir, reference_dir, clean_docs, origin = quick_assets(Path(tmp)) if args.quick else real_assets(sizes, args.reference)
        timings["assets"] = time.monotonic() - started
        pool = build_pool(clean_docs, sizes)
        cache = None
        if not args.quick:
            from embedded import paths

            cache = ScoreCache(paths.home() / "bench" / "miniplm-scores.sqlite")
        engine = ScoringEngine.from_pretrained(
            teacher_dir, reference_dir, EngineConfig(device=device.type), cache=cache
        )
        t0 = time.monotonic()
        scores = score_pool(engine, pool.texts, loads)
        timings["scoring"] = time.monotonic() - t0
        tokenizer = engine.tokenizer
        context_id = engine.context_id
        pool_ids = tokenizer(pool.texts, add_special_tokens=False)["input_ids"]
        heldout_ids = tokenizer(pool.heldout, add_special_tokens=False)["input_ids"]
        validation_ids = tokenizer(pool.validation, add_special_tokens=False)["input_ids"]
        pair = {"dtype": engine.fingerprint.dtype, "device": engine.fingerprint.device_type}
    vocab = CompactVocab([*pool_ids, *heldout_ids, *validation_ids], context_id, sizes.student_vocab)
    heldout_sources = sorted(set(pool.heldout_sources))
    heldout_blocks = {
        s: blocks_of(vocab.stream([ids for ids, hs in zip(heldout_ids, pool.heldout_sources, strict=True) if hs == s]), sizes.seq_len)
        for s in heldout_sources
    }
    all_heldout = torch.cat(list(heldout_blocks.values()))
    validation_blocks = {"all": blocks_of(vocab.stream(validation_ids), sizes.seq_len)}
    entropy = unigram_entropy(vocab.stream(heldout_ids))
    if args.student_threads:
        torch.set_num_threads(args.student_threads)

    # tau for (d), chosen on the validation split with seed 0: the held-out set never sees the choice.
    t0 = time.monotonic()
    tau_losses = {}
    for tau in sizes.taus:
        model, _ = train_student(vocab.stream(pool_ids, choose("soft", scores, pool, 0, tau)), vocab.size, sizes, 0, device)
        tau_losses[tau] = evaluate(model, validation_blocks, device)[0]
        log.info("soft tau=%g: validation loss %.4f", tau, tau_losses[tau])
    tau = min(tau_losses, key=lambda t: (tau_losses[t], t))
    timings["tau"] = time.monotonic() - t0

    seeds = list(range(args.seeds))
    results = Results(
        losses={m: [] for m in METHODS},
        by_source={m: [] for m in METHODS},
        kept={m: [] for m in METHODS},
        clean_token_share={m: [] for m in METHODS},
        curves={"uniform": [], "difference": []},
        tau_losses=tau_losses,
        tau=tau,
    )
    tokens_per_doc = np.array([len(ids) for ids in pool_ids])
    is_clean = np.array([k == CLEAN for k in pool.kinds])
    t0 = time.monotonic()
    for seed in seeds:
        for method in METHODS:
            repeats = choose(method, scores, pool, seed, tau)
            model, _ = train_student(vocab.stream(pool_ids, repeats), vocab.size, sizes, seed, device)
            loss, per_source = evaluate(model, heldout_blocks, device)
            results.losses[method].append(loss)
            results.by_source[method].append(per_source)
            results.kept[method].append(
                {k: float(np.mean([r > 0 for r, kk in zip(repeats, pool.kinds, strict=True) if kk == k])) for k in KINDS}
            )
            tokens = tokens_per_doc * repeats
            results.clean_token_share[method].append(float(tokens[is_clean].sum() / max(1, tokens.sum())))
            loads.append(os.getloadavg()[0])
            log.info("seed %d %-22s held-out loss %.4f (%.0f s so far)", seed, method, loss, time.monotonic() - t0)
        longer = dataclasses.replace(
            sizes, train_tokens=CURVE_MULTIPLE * sizes.train_tokens, curve_points=CURVE_MULTIPLE * sizes.curve_points
        )
        for method in results.curves:
            _, curve = train_student(
                vocab.stream(pool_ids, choose(method, scores, pool, seed)), vocab.size, longer, seed, device, all_heldout
            )
            results.curves[method].append(curve)
            log.info("seed %d %-22s curve to %d tokens done (%.0f s so far)", seed, method, longer.train_tokens, time.monotonic() - t0)
        timings["students"] = time.monotonic() - t0
        timings["total"] = time.monotonic() - started
        table = render(args, sizes, origin, pool, scores, vocab.size, entropy, results, timings, pair, loads)
        if seed != seeds[-1]:
            # A long run leaves a usable table behind after every seed, marked as partial.
            args.out.write_text(table + f"\n(partial: {seed + 1} of {len(seeds)} seeds done)\n")
    return table


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_curve(curves: Sequence[Curve]) -> Curve:
    return [(tokens, statistics.fmean(c[i][1] for c in curves)) for i, (tokens, _) in enumerate(curves[0])]


def tokens_to_reach(curve: Curve, target: float) -> float | None:
    """Training tokens at which `curve` first reaches `target` (linear between points), or None."""
    previous = (0, float("inf"))
    for tokens, loss in curve:
        if loss <= target:
            t0, l0 = previous
            if not math.isfinite(l0):
                return float(tokens)
            return t0 + (tokens - t0) * (l0 - target) / (l0 - loss) if l0 != loss else float(tokens)
        previous = (tokens, loss)
    return None


def render(args, sizes, origin, pool, scores, vocab_size, entropy, results, timings, pair, loads) -> str:  # type: ignore[no-untyped-def]
    base, _ = _mean_sd(results.losses["uniform"])
    n_seeds = len(results.losses["uniform"])
    sources = sorted(set(pool.heldout_sources))
    mode = "--quick: random-weight pair, tiny sizes; the numbers mean nothing" if args.quick else "--gpu" if args.gpu else "CPU mode"
    lines = [
        f"## MiniPLM miniature replication ({mode})",
        "",
        f"{datetime.date.today().isoformat()} · {platform.machine()} · {os.cpu_count()} CPUs · torch {torch.__version__} "
        f"· {torch.get_num_threads()} threads · engine {pair['device']}/{pair['dtype']}",
        "",
        f"CPU: {cpu_description()}. 1-min load average along the run: {min(loads, default=0):.1f} to "
        f"{max(loads, default=0):.1f} (mean {statistics.fmean(loads) if loads else 0:.1f}, {len(loads)} samples)"
        + (f"; above {os.cpu_count()}: the machine was shared, timings are *(loaded)*" if max(loads, default=0) > (os.cpu_count() or 1) else "")
        + ".",
        "",
        f"Pool: {pool.kinds.count(CLEAN)} {origin} + {len(pool.kinds) - pool.kinds.count(CLEAN)} noisy documents "
        f"({sizes.per_noise} each of {', '.join(NOISE_KINDS)}), {int(scores.n_tokens.sum())} tokens; each method keeps "
        f"half. Student: Llama {sizes.student_layers} layers x {sizes.student_width}, {vocab_size}-token compact "
        f"vocabulary, {sizes.train_tokens} training tokens each. Held-out: {len(pool.heldout)} clean documents "
        f"({', '.join(f'{s} {pool.heldout_sources.count(s)}' for s in sources)}); validation (for tau): "
        f"{len(pool.validation)}. {n_seeds} seeds: mean ± sample standard deviation.",
        "",
        f"Unigram entropy of the held-out text: **{entropy:.3f} nats/token**; uniform's held-out loss {base:.3f} "
        f"({'below' if base < entropy else 'NOT below'} it by {entropy - base:+.3f}).",
        "",
        "| selection | held-out loss | Δ vs uniform | "
        + " | ".join(f"{s}" for s in sources)
        + " | clean share of training tokens | "
        + " | ".join(f"kept: {k}" for k in KINDS)
        + " |",
        "|---|---|---|" + "---|" * len(sources) + "---|" + "---|" * len(KINDS),
    ]
    for method in METHODS:
        mean, sd = _mean_sd(results.losses[method])
        share = {k: statistics.fmean(d[k] for d in results.kept[method]) for k in KINDS}
        per_source = " | ".join(f"{statistics.fmean(d[s] for d in results.by_source[method]):.3f}" for s in sources)
        label = METHOD_LABELS[method] + (f" (τ={results.tau:g})" if method == "soft" else "")
        lines.append(
            f"| {label} | {mean:.4f} ± {sd:.4f} | {mean - base:+.4f} | {per_source} | "
            f"{statistics.fmean(results.clean_token_share[method]):.0%} | "
            + " | ".join(f"{share[k]:.0%}" for k in KINDS)
            + " |"
        )
    by_kind = " · ".join(
        f"{k} {np.nanmean(scores.score[[kk == k for kk in pool.kinds]]):+.2f}" for k in KINDS
    )
    uniform, difference = mean_curve(results.curves["uniform"]), mean_curve(results.curves["difference"])
    # Both curves are points of one schedule CURVE_MULTIPLE x the budget long: at every point, the
    # two students have seen as many tokens at the same learning rates.
    needed = [tokens_to_reach(uniform, loss) for _, loss in difference]
    budget = sizes.train_tokens
    at_budget = next(k for k, (t, _) in enumerate(difference) if t >= budget)
    need, target = needed[at_budget], difference[at_budget][1]
    if need is None:
        matched = (
            f"uniform does not reach difference's loss at {budget:,} tokens ({target:.4f}) within {uniform[-1][0]:,}: "
            f"difference saves more than {uniform[-1][0] / budget:.0f}x compute"
        )
    else:
        matched = (
            f"uniform reaches difference's loss at {budget:,} tokens ({target:.4f}) after {need:,.0f} tokens: "
            + (f"difference saves {need / budget:.2f}x compute" if need > budget else "no compute saving shown")
        )
    lines += [
        "",
        f"Held-out loss along training (mean over seeds): points of one run per method and seed, "
        f"{CURVE_MULTIPLE}x the budget long, on the same cosine schedule: at each point both students have had "
        "as many tokens at the same learning rates (a point is not what a run stopped there would reach, "
        "whose learning rate would have decayed):",
        "",
        "| training tokens | " + " | ".join(f"{t:,}" for t, _ in uniform) + " |",
        "|---|" + "---|" * len(uniform),
        "| (a) uniform | " + " | ".join(f"{v:.4f}" for _, v in uniform) + " |",
        "| (b) difference | " + " | ".join(f"{v:.4f}" for _, v in difference) + " |",
        "| tokens (a) needs for (b)'s loss | "
        + " | ".join("—" if n is None else f"{n:,.0f} ({n / t:.2f}x)" for n, (t, _) in zip(needed, difference, strict=True))
        + " |",
        "",
        f"Compute-matched: {matched}.",
        "",
        "Soft weighting, τ chosen on the validation split (seed 0): "
        + ", ".join(f"τ={t:g} {v:.4f}" for t, v in results.tau_losses.items())
        + f" → τ={results.tau:g}.",
        "",
        f"Mean difference score by kind (nats/token): {by_kind}.",
        f"Timings: assets {timings['assets']:.0f} s, scoring {timings['scoring']:.0f} s, tau {timings['tau']:.0f} s, "
        f"students {timings['students']:.0f} s, total {timings['total']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="tiny random-weight pair and sizes (CI: checks it runs)"
    )
    mode.add_argument("--gpu", action="store_true", help="~20x larger, scoring and students on one CUDA device")
    parser.add_argument("--seeds", type=int, default=None, help="student seeds (default 3; --quick 2)")
    parser.add_argument(
        "--reference",
        choices=("lens", "scratch"),
        default="lens",
        help="the pair's reference: the demo's teacher lens, or the small scratch model it used before",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown table (default bench/results/miniplm[-quick|-gpu].md)"
    )
    parser.add_argument(
        "--student-tokens", type=int, default=None, help="training tokens per student (default: the mode's)"
    )
    parser.add_argument(
        "--pool-clean",
        type=int,
        default=None,
        help="clean documents in the pool (default: the mode's); each noise kind scales with it",
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
    for flag in ("pool_clean", "student_tokens"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device (and the CUDA build of torch: see scripts/setup.sh)")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    suffix = "-quick" if args.quick else "-gpu" if args.gpu else ""
    args.out = args.out or Path(__file__).resolve().parent / "results" / f"miniplm{suffix}.md"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = run(args)
    args.out.write_text(table)
    print(table)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
