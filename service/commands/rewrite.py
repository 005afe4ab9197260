"""`reweigh rewrite`: score a corpus, select globally, write reweighted parquet shards and a manifest.

Killed at any point, the same command resumes where it stopped; rerun on a finished job it does
nothing. See corpus/rewrite.py for the directory layout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from corpus.config import RayOptions, RewriteConfig, SelectionConfig
from corpus.diagnostics import describe
from corpus.executor import Executor, LocalExecutor
from corpus.rewrite import RewriteProgress, run_rewrite
from corpus.storage import job_path
from scoring.config import PairSpec
from service.commands.checks import check_output_path
from service.commands.config_args import add_model_args, model_kwargs
from service.commands.engine_args import add_engine_args, pair_from_args

SELECTION_FIELDS = tuple(SelectionConfig.model_fields)
JOB_FIELDS = tuple(n for n in RewriteConfig.model_fields if n not in ("inputs", "output", "selection"))
RAY_FIELDS = tuple(RayOptions.model_fields)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rewrite",
        help="score, select and rewrite a corpus into weighted parquet shards with a manifest",
        description="Score every INPUT (jsonl, jsonl.gz, jsonl.zst, parquet, or a datasets save_to_disk "
        "directory) with a teacher/reference pair, select documents over the whole corpus, and write "
        "OUT/shards/*.parquet, OUT/report.json, plots and OUT/manifest.json (last). Resumable.",
    )
    add_engine_args(p)
    p.add_argument("--out", required=True, help="output directory (one job per directory)")
    add_model_args(p.add_argument_group("selection"), SelectionConfig, SELECTION_FIELDS, flags={"method": "--select"})
    add_model_args(p.add_argument_group("input and output"), RewriteConfig, JOB_FIELDS)
    add_executor_args(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.set_defaults(func=run)


def add_executor_args(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("executor (same shards and manifest on either)")
    r.add_argument("--executor", choices=["local", "ray"], default="local", help="run the job here, or on a Ray cluster")
    add_model_args(r, RayOptions, RAY_FIELDS, prefix="ray_")


def config_from_args(args: argparse.Namespace) -> RewriteConfig:
    # Only options the user gave are passed, so that one meant for the other method is refused by name.
    return RewriteConfig(
        inputs=list(args.inputs),
        output=args.out,
        selection=SelectionConfig(**model_kwargs(args, SELECTION_FIELDS)),
        **model_kwargs(args, JOB_FIELDS),
    )


def executor_from_args(args: argparse.Namespace, pair: PairSpec) -> tuple[Executor, PairSpec]:
    if args.executor == "local":
        return LocalExecutor(), pair
    from corpus.executor.ray import RayExecutor, ray_pair

    options = RayOptions(**model_kwargs(args, RAY_FIELDS, prefix="ray_"))
    pair = ray_pair(pair, options)
    return RayExecutor(options), pair


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


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # validated before the models load
    output = job_path(config.output)
    if isinstance(output, Path):  # a store's bucket is checked when the job claims its prefix
        check_output_path(output, "--out", directory=True)
    executor, pair = executor_from_args(args, pair_from_args(args))
    bars = ProgressBars(len(config.inputs))
    try:
        result = run_rewrite(config, pair, executor=executor, progress=bars)
    finally:
        bars.close()
        executor.close()
    m, r = result.manifest, result.report
    if result.already_done:
        print(f"{config.output}: already finished (manifest {m.fingerprint['digest'][:12]}); nothing to do")
        return 0
    t = m.totals
    print(
        f"rewrote {t.documents_in} documents ({t.tokens_in} tokens) from {len(m.inputs)} inputs in {result.seconds:.1f}s: "
        f"kept {t.rows_out} ({t.documents_out} with repeats, {t.tokens_out} tokens) in {len(m.shards)} shards"
    )
    if r["documents"]["not_scored_by_reason"]:
        print(f"  not scored: {r['documents']['not_scored_by_reason']}")
    print(f"  dropped: {r['documents']['dropped_by_reason']}; threshold: {r['threshold']}")
    if m.skipped_inputs:
        print(f"  SKIPPED {len(m.skipped_inputs)} unreadable inputs (listed in the manifest):")
        for s in m.skipped_inputs:
            print(f"    {s.path}: {s.reason}")
    if result.seconds > 0:
        print(
            f"  {t.documents_in / result.seconds:,.1f} docs/s, {t.tokens_in / result.seconds:,.0f} tokens/s; "
            f"phases {', '.join(f'{k} {v:.1f}s' for k, v in result.phases.items())}"
        )
    for line in describe(r["diagnostics"]) if "diagnostics" in r else []:
        print(f"  {line}")
    print(f"  manifest: {result.output / 'manifest.json'}")
    return 0
