"""Reference recipes for the embedded default, measured on the demo corpus.

For each recipe: build it on the committed D_ref (seconds on this machine), its validation loss on
held-out D_ref blocks, then on the documents `reweigh demo` rewrites (the first 96 of the corpus):
Spearman(teacher, reference), Spearman(score, teacher), the share kept per source by top-50%
selection, and the pair warnings of corpus/diagnostics.py. A second pool adds 8 noisy documents of
each kind from embedded/noise.py to those 96 and reports what top-50% keeps of each kind: a recipe
must keep the score's ability to drop noise.

    python bench/reference.py [--recipes NAME,...] [--threads 2] [--out bench/results/reference.md]

Built references and the teacher's log-probs are cached under $REWEIGH_HOME/bench/reference/ (a
rerun only re-measures). The teacher comes from $REWEIGH_HOME as `reweigh demo` builds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/scoring.py would shadow the scoring package: drop this folder from the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import hashlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import numpy.typing as npt
import torch

from corpus.diagnostics import pair_diagnostics
from embedded.noise import NOISE_KINDS, make_noise
from embedded.reference import DEMO_REFERENCE, ReferenceSpec
from scoring.batching import bucket_batches, document_windows
from scoring.hardware import cpu_description
from scoring.models import ScoringModel

log = logging.getLogger("bench.reference")

DEMO_DOCS = 96  # what `reweigh demo` rewrites
NOISE_PER_KIND = 8
NOISE_CHARS = 2_000  # noisy documents are cut to this, to bound the teacher's scoring time
MAX_LENGTH = 512  # the demo's scoring window (the reference's context)
OVERLAP = MAX_LENGTH // 4

LENS = dict(init="teacher-lens", seq_len=512, train_tokens=48 * 512)
CUT_ADAPT = dict(init="teacher-cut", seq_len=512, batch_rows=4, lr=3e-4, warmup_fraction=0.1)
# name -> (what it is, spec)
RECIPES: dict[str, tuple[str, ReferenceSpec]] = {
    "default": ("the demo's reference (DEMO_REFERENCE)", DEMO_REFERENCE),
    "scratch": ("scratch Llama 4x128, 400k tokens (the default before)", ReferenceSpec()),
    "lens20-clean": (
        "teacher's first 20 layers + norm, a map solved on 24.6k clean D_ref tokens, folded into an untied head",
        ReferenceSpec(layers=20, **LENS),  # type: ignore[arg-type]
    ),
    "lens16-noise": (
        "teacher's first 16 layers + norm, a map solved on 24.6k D_ref tokens, a third of them noisy copies",
        ReferenceSpec(layers=16, noise_share=1 / 3, **LENS),  # type: ignore[arg-type]
    ),
    "lens24-noise": (
        "teacher's first 24 layers + norm, a map solved on 24.6k D_ref tokens, a third of them noisy copies",
        ReferenceSpec(layers=24, noise_share=1 / 3, **LENS),  # type: ignore[arg-type]
    ),
    "cut2": (
        "teacher's first 2 layers + norm + head, as is",
        ReferenceSpec(init="teacher-cut", layers=2, adapt_layers=0, train_tokens=0),
    ),
    "cut4": (
        "teacher's first 4 layers + norm + head, as is",
        ReferenceSpec(init="teacher-cut", layers=4, adapt_layers=0, train_tokens=0),
    ),
    "cut2+1": (
        "teacher's first 2 layers + its last layer + norm + head, as is",
        ReferenceSpec(init="teacher-cut", layers=2, top_layers=1, adapt_layers=0, train_tokens=0),
    ),
    "cut3+1": (
        "teacher's first 3 layers + its last layer + norm + head, as is",
        ReferenceSpec(init="teacher-cut", layers=3, top_layers=1, adapt_layers=0, train_tokens=0),
    ),
    "cut2-norm16k": (
        "teacher's first 2 layers + norm + head, final norm adapted on 16k tokens",
        ReferenceSpec(
            init="teacher-cut", layers=2, adapt_layers=0, train_tokens=16_384, seq_len=512, batch_rows=2, lr=1e-2,
            warmup_fraction=0.1,
        ),
    ),
    "cut2-adapt32k": (
        "teacher cut 2 layers, top layer + norm adapted on 32k tokens",
        ReferenceSpec(layers=2, adapt_layers=1, train_tokens=32_768, **CUT_ADAPT),  # type: ignore[arg-type]
    ),
    "cut4-adapt32k": (
        "teacher cut 4 layers, top layer + norm adapted on 32k tokens",
        ReferenceSpec(layers=4, adapt_layers=1, train_tokens=32_768, **CUT_ADAPT),  # type: ignore[arg-type]
    ),
}


def eval_pools() -> tuple[list[str], list[str], list[str], list[str]]:
    """(demo texts, their sources, noisy texts, their kinds): the demo's 96 documents as
    `reweigh demo` picks them, and noise made from the documents after them (seeded)."""
    from embedded.corpus import read_jsonl_zst, subset_files

    rows = [row for path in subset_files()[0] for row in read_jsonl_zst(path)]
    demo = rows[:DEMO_DOCS]
    sources_of_noise = [r["text"][:NOISE_CHARS] for r in rows[DEMO_DOCS : DEMO_DOCS + NOISE_PER_KIND * len(NOISE_KINDS)]]
    rng = random.Random(0)
    noisy, kinds = [], []
    for k, kind in enumerate(NOISE_KINDS):
        for j in range(NOISE_PER_KIND):
            other = demo[rng.randrange(len(demo))]["text"][:NOISE_CHARS]
            noisy.append(make_noise(kind, sources_of_noise[k * NOISE_PER_KIND + j], other, rng))
            kinds.append(kind)
    return [r["text"] for r in demo], [r["source"] for r in demo], noisy, kinds


def mean_logprobs(model: ScoringModel, tokenizer, texts: Sequence[str]) -> tuple[npt.NDArray[np.float64], float]:  # type: ignore[no-untyped-def]
    """Per-document mean token log-prob as the engine computes it (same windows), and seconds taken."""
    context = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else context
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    windows = [w for doc, x in enumerate(ids) for w in document_windows(doc, x, context, MAX_LENGTH, OVERLAP)]
    sums = np.zeros(len(texts))
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in bucket_batches(windows, 8192, pad):
            logprobs = model.counted_logprobs(batch, chunk_tokens=1024).double().cpu().numpy()
            docs = np.array([window.doc for window in batch.windows])
            np.add.at(sums, docs[batch.counted_rows], logprobs)
    return sums / np.array([len(x) for x in ids]), time.perf_counter() - started


def texts_key(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for t in texts:
        digest.update(hashlib.sha256(t.encode()).digest())
    return digest.hexdigest()[:16]


def teacher_logprobs(teacher_dir: Path, texts: Sequence[str], cache_dir: Path) -> npt.NDArray[np.float64]:
    from scoring.fingerprint import SOURCE_FILE

    source = (teacher_dir / SOURCE_FILE).read_bytes() if (teacher_dir / SOURCE_FILE).is_file() else b""
    key = hashlib.sha256(source + texts_key(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"teacher-{key}.npy"
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float64)
    from scoring.models import load_tokenizer

    model = ScoringModel.load(teacher_dir, dtype=torch.float32, device=torch.device("cpu"))
    values, seconds = mean_logprobs(model, load_tokenizer(teacher_dir), texts)
    log.info("teacher scored %d documents in %.0f s", len(texts), seconds)
    np.save(path, values)
    return values


def kept_top_half(score: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Top-50% as the sampler keeps it (ties do not occur with real scores)."""
    order = np.argsort(-score, kind="stable")
    repeats = np.zeros(len(score), dtype=np.int64)
    repeats[order[: len(score) // 2]] = 1
    return repeats


def build(spec: ReferenceSpec, teacher_dir: Path, cache_dir: Path) -> Path:
    from embedded.corpus import subset_files
    from embedded.reference import ensure_reference

    out = cache_dir / hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    return ensure_reference(teacher_dir, subset_files()[1], out, spec)


def measure(name: str, out: Path, spec: dict | None, pools, teacher) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Figures for the reference in `out` (its build figures from its training.json)."""
    from embedded.reference import TRAINING_FILE
    from scoring.models import load_tokenizer

    demo, sources, noisy, kinds = pools
    training = json.loads((out / TRAINING_FILE).read_text())
    model = ScoringModel.load(out, dtype=torch.float32, device=torch.device("cpu"))
    reference, seconds = mean_logprobs(model, load_tokenizer(out), demo + noisy)
    n = len(demo)
    t_demo, r_demo = teacher[:n], reference[:n]
    ok = np.ones(n, dtype=bool)
    score = t_demo - r_demo
    diag = pair_diagnostics(
        teacher_logprob=t_demo,
        reference_logprob=r_demo,
        score=score,
        ok=ok,
        repeats=kept_top_half(score),
        groups=np.array(sources),
    )
    pool_score = teacher - reference
    pool_kept = kept_top_half(pool_score) > 0
    all_kinds = np.array(["clean"] * n + kinds)
    return {
        "recipe": name,
        "spec": spec,
        "build_seconds": training["seconds"],
        "val_loss": training["val_loss"],
        "reference_scoring_seconds": round(seconds, 1),
        "reference_range": [float(r_demo.min()), float(r_demo.max())],
        "teacher_range": [float(t_demo.min()), float(t_demo.max())],
        "diagnostics": diag,
        "noise_kept_share": {k: float(pool_kept[all_kinds == k].mean()) for k in ("clean", *NOISE_KINDS)},
    }


def render(results: list[dict], header: str) -> str:  # type: ignore[type-arg]
    lines = [
        header,
        "",
        "| recipe | build s | val loss | ρ(teacher, ref) | ρ(score, teacher) | kept per source (top-50%, 96 docs) "
        "| kept: clean | " + " | ".join(NOISE_KINDS) + " | warnings |",
        "|---|---|---|---|---|---|---|" + "---|" * len(NOISE_KINDS) + "---|",
    ]
    for r in results:
        d = r["diagnostics"]
        corr = d["rank_correlations"]
        groups = ", ".join(f"{g} {v['kept']}/{v['documents']}" for g, v in d["groups"].items())
        noise = " | ".join(f"{100 * r['noise_kept_share'][k]:.0f}%" for k in NOISE_KINDS)
        warnings = ", ".join(w["code"] for w in d["warnings"]) or "none"

        def fmt(x: float | None) -> str:
            return "—" if x is None else f"{x:.2f}"

        lines.append(
            f"| {r['recipe']} | {r['build_seconds']:.0f} | {r['val_loss']:.2f} | {fmt(corr['teacher_vs_reference'])} "
            f"| {fmt(corr['score_vs_teacher'])} | {groups} | {100 * r['noise_kept_share']['clean']:.0f}% | {noise} "
            f"| {warnings} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=None, help=f"comma-separated recipe names (default: all of {', '.join(RECIPES)})")
    parser.add_argument(
        "--prebuilt",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also measure a reference built elsewhere (e.g. by `reweigh demo`); repeatable",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure (json) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    from embedded import paths
    from embedded.teacher import ensure_teacher

    names = list(RECIPES) if args.recipes is None else [n.strip() for n in args.recipes.split(",") if n.strip()]
    prebuilt = [item.split("=", 1) for item in args.prebuilt]
    if any(len(item) != 2 for item in prebuilt):
        parser.error("--prebuilt takes LABEL=DIR")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    teacher_dir = ensure_teacher()
    cache_dir = paths.home() / "bench" / "reference"
    cache_dir.mkdir(parents=True, exist_ok=True)
    pools = eval_pools()
    teacher = teacher_logprobs(teacher_dir, pools[0] + pools[2], cache_dir)
    results = []
    for label, directory in prebuilt:
        results.append(measure(label, Path(directory), None, pools, teacher))
        log.info("%s: %s", label, json.dumps(results[-1]["diagnostics"]["rank_correlations"]))
    for name in names:
        label, spec = RECIPES[name]
        log.info("recipe %s: %s", name, label)
        out = build(spec, teacher_dir, cache_dir)
        results.append(measure(f"{name}: {label}", out, asdict(spec), pools, teacher))
        log.info("%s: %s", name, json.dumps(results[-1]["diagnostics"]["rank_correlations"]))
    header = (
        f"Reference recipes on the demo corpus ({cpu_description()}, "
        f"{args.threads} threads, torch {torch.__version__}; build seconds measured on a shared, loaded machine)"
    )
    table = render(results, header)
    print(table)
    if args.out:
        args.out.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
