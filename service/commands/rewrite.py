"""`reweigh rewrite`: score a corpus, select globally, write reweighted parquet shards and a manifest.

Killed at any point, the same command resumes where it stopped; rerun on a finished job it does
nothing. See corpus/rewrite.py for the directory layout.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from corpus.rewrite import RewriteConfig, RewriteProgress, run_rewrite
from corpus.sampler import SelectionConfig
from scoring.errors import ConfigError
from service.commands.engine_args import add_engine_args, engine_config_from_args, engine_from_args

if TYPE_CHECKING:
    from corpus.ray_engine import RayRewrite


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rewrite",
        help="score, select and rewrite a corpus into weighted parquet shards with a manifest",
        description="Score every INPUT (jsonl, jsonl.gz, jsonl.zst, parquet, or a datasets save_to_disk "
        "directory) with a teacher/reference pair, select documents over the whole corpus, and write "
        "OUT/shards/*.parquet, OUT/report.json, plots and OUT/manifest.json (last). Resumable.",
    )
    add_engine_args(p, required=False)  # required unless --scorer proxy:DIR (checked in scorer_from_args)
    add_scorer_args(p)
    p.add_argument("--out", required=True, help="output directory (one job per directory)")
    g = p.add_argument_group("selection")
    g.add_argument("--select", dest="method", default="top-fraction", choices=["top-fraction", "soft"])
    g.add_argument(
        "--ratio", type=float, default=None, help="top-fraction: share of documents kept (default 0.5)"
    )
    g.add_argument(
        "--keep-tokens",
        type=int,
        default=None,
        help="top-fraction: keep the best documents within this many tokens",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="soft: weights ∝ exp(score / temperature) (default 1.0)",
    )
    g.add_argument(
        "--min-weight",
        type=float,
        default=None,
        help="soft: lowest weight (default 0: easy documents may drop out)",
    )
    g.add_argument(
        "--max-weight", type=float, default=None, help="soft: highest weight = most repeats (default 4)"
    )
    g.add_argument(
        "--target-documents",
        type=int,
        default=None,
        help="soft: total repeats (default: the eligible documents)",
    )
    g.add_argument("--target-tokens", type=int, default=None, help="soft: total tokens with repeats instead")
    g.add_argument(
        "--min-teacher-logprob",
        type=float,
        default=None,
        help="drop documents the teacher finds less likely (noise)",
    )
    g.add_argument(
        "--keep-duplicates", action="store_true", help="keep exact duplicates (default: keep the first only)"
    )
    g.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("input and output")
    o.add_argument("--text-field", default="text")
    o.add_argument("--id-field", default="id")
    o.add_argument("--shard-rows", type=int, default=None, help="rows per output shard")
    o.add_argument(
        "--shard-bytes", type=int, default=None, help="text bytes per output shard (default 64 MiB)"
    )
    o.add_argument(
        "--chunk-docs", type=int, default=2048, help="documents per engine call and per checkpoint"
    )
    o.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="an unreadable input shard stops the job, or is skipped and listed",
    )
    o.add_argument("--overwrite", action="store_true", help="replace a different job in --out")
    add_ray_args(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.set_defaults(func=run)


def selection_from_args(args: argparse.Namespace) -> SelectionConfig:
    # Only options the user gave are passed, so that one meant for the other method is refused by name.
    names = (
        "ratio",
        "keep_tokens",
        "temperature",
        "min_weight",
        "max_weight",
        "target_documents",
        "target_tokens",
        "min_teacher_logprob",
    )
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return SelectionConfig(method=args.method, drop_duplicates=not args.keep_duplicates, **given)


def config_from_args(args: argparse.Namespace) -> RewriteConfig:
    return RewriteConfig(
        inputs=list(args.inputs),
        output=args.out,
        selection=selection_from_args(args),
        seed=args.seed,
        text_field=args.text_field,
        id_field=args.id_field,
        shard_rows=args.shard_rows,
        shard_bytes=args.shard_bytes,
        on_error=args.on_error,
        overwrite=args.overwrite,
        chunk_docs=args.chunk_docs,
    )


class ProgressBars:
    """One tqdm bar per phase: documents with docs/s, tokens/s and ETA while scoring."""

    def __init__(self, total_inputs: int) -> None:
        self.bar: tqdm | None = None
        self.phase = ""
        self.started = time.perf_counter()
        self.total_inputs = total_inputs
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: RewriteProgress) -> None:
        if p.phase != self.phase:
            self.close()
            self.phase = p.phase
            self.started = time.perf_counter()
            if p.phase in ("scoring", "writing"):
                unit = "doc"
                self.bar = tqdm(
                    desc=p.phase, unit=unit, dynamic_ncols=True, disable=not self.enabled, total=None
                )
        if self.bar is None:
            return
        self.bar.update(p.documents - self.bar.n)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        postfix = {"shards": f"{p.shards_done}/{p.shards_total}"}
        if p.phase == "scoring":
            postfix["tok/s"] = f"{p.tokens / elapsed:,.0f}"
            if p.shards_done:  # ETA from whole input shards: their sizes are not known up front
                remaining = elapsed / p.shards_done * (p.shards_total - p.shards_done)
                postfix["eta"] = tqdm.format_interval(remaining)
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def add_scorer_args(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("scorer (default: the teacher/reference pair)")
    s.add_argument("--scorer", default="pair", metavar="pair|proxy:DIR",
                   help="proxy:DIR: score with a proxy from `reweigh distill` alone (no language model runs)")
    s.add_argument("--cascade", default=None, metavar="proxy:DIR",
                   help="the proxy everywhere, the pair only where the proxy score is within --band of the top-ratio threshold")
    s.add_argument("--band", type=float, default=0.3,
                   help="cascade: share of documents around the threshold (by the proxy's held-out scores) sent to the pair")


def _proxy_dir(value: str, option: str) -> str:
    if not value.startswith("proxy:") or not value[len("proxy:"):]:
        raise ConfigError(f"{option} {value!r}: expected proxy:DIR")
    return value[len("proxy:"):]


def scorer_from_args(args: argparse.Namespace, config: RewriteConfig) -> Any:
    """The pair, a proxy, or a cascade of both, as the options ask; combinations that cannot work are refused."""
    from scoring.proxy import CascadeScorer, ProxyScorer

    proxy = _proxy_dir(args.scorer, "--scorer") if args.scorer != "pair" else None
    cascade = _proxy_dir(args.cascade, "--cascade") if args.cascade else None
    if proxy and cascade:
        raise ConfigError("--scorer proxy:DIR and --cascade proxy:DIR exclude each other")
    if proxy or cascade:
        if args.engine == "ray":
            raise ConfigError("--scorer proxy and --cascade run with --engine local")
        if config.selection.min_teacher_logprob is not None:
            raise ConfigError("--min-teacher-logprob needs the teacher's log-prob of every document: use the pair, not a proxy")
    if proxy:
        return ProxyScorer.load(proxy)
    if not args.teacher or not args.reference:
        raise ConfigError("--teacher and --reference are required (or --scorer proxy:DIR)")
    if not cascade:
        return ray_job_from_args(args) if args.engine == "ray" else engine_from_args(args)
    selection = config.selection
    if selection.method != "top-fraction" or selection.keep_tokens is not None:
        raise ConfigError("--cascade needs --select top-fraction with --ratio: its band surrounds a top-ratio threshold")
    return CascadeScorer(ProxyScorer.load(cascade), engine_from_args(args), alpha=selection.effective_ratio, band=args.band)


def add_ray_args(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("engine (same scores, shards and manifest on either)")
    r.add_argument("--engine", choices=["local", "ray"], default="local", help="score here, or on a Ray cluster")
    r.add_argument("--address", default=None, help="ray: 'auto', ray://head:10001 or host:port (default: local Ray)")
    r.add_argument("--actors", type=int, default=1, help="ray: teacher/reference replicas (one per GPU)")
    r.add_argument("--gpus-per-actor", type=float, default=0.0, help="ray: GPUs per actor (1 on a GPU cluster)")


def ray_job_from_args(args: argparse.Namespace) -> RayRewrite:
    from corpus.ray_engine import RayOptions, RayRewrite

    if args.cache is not None:
        raise ConfigError("--cache is not supported with --engine ray (one SQLite file cannot serve a cluster)")
    options = RayOptions(address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor)
    return RayRewrite(args.teacher, args.reference, engine_config_from_args(args), options)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # validated before the models load
    engine: Any = scorer_from_args(args, config)
    bars = ProgressBars(len(config.inputs))
    try:
        if args.engine == "ray":  # .stats after the run: the actors' scoring time
            result = engine.run(config, progress=bars)
        else:
            result = run_rewrite(config, engine, progress=bars)
    finally:
        bars.close()
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    m, r = result.manifest, result.report
    if result.already_done:
        print(f"{config.output}: already finished (manifest {m.fingerprint['digest'][:12]}); nothing to do")
        return 0
    t = m.totals
    stats = getattr(engine, "stats", None)
    forward = getattr(stats, "forward_seconds", 0.0)
    print(
        f"rewrote {t.documents_in} documents ({t.tokens_in} tokens) from {len(m.inputs)} inputs in {result.seconds:.1f}s: "
        f"kept {t.rows_out} ({t.documents_out} with repeats, {t.tokens_out} tokens) in {len(m.shards)} shards"
    )
    if r["documents"]["not_scored_by_reason"]:
        print(f"  not scored: {r['documents']['not_scored_by_reason']}")
    print(f"  dropped: {r['documents']['dropped_by_reason']}; threshold: {r['threshold']}")
    if args.scorer != "pair" or args.cascade:
        docs = r["documents"]
        print(f"  scored by the pair: {docs['scored_by_pair']} of {docs['scored']} documents "
              f"({docs['scored_by_pair'] / max(docs['scored'], 1):.1%}); the proxy scored the rest")
    if m.skipped_inputs:
        print(f"  SKIPPED {len(m.skipped_inputs)} unreadable inputs (listed in the manifest):")
        for s in m.skipped_inputs:
            print(f"    {s.path}: {s.reason}")
    if result.seconds > 0:
        print(
            f"  {t.documents_in / result.seconds:,.1f} docs/s, {t.tokens_in / result.seconds:,.0f} tokens/s; "
            f"model forward {forward:.1f}s of {result.seconds:.1f}s"
        )
    print(f"  manifest: {result.output / 'manifest.json'}")
    return 0
