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
from corpus.rewrite import RewriteProgress, RewriteResult, run_rewrite
from corpus.scorers import scorer_spec
from corpus.storage import job_path
from scoring.config import PairSpec, ScorerConfig
from scoring.errors import ConfigError
from scoring.protocols import ScorerSpec
from service.commands.checks import check_output_path
from service.commands.config_args import add_model_args, as_flags, model_kwargs
from service.commands.engine_args import add_engine_args, pair_from_args

SELECTION_FIELDS = tuple(SelectionConfig.model_fields)
JOB_FIELDS = tuple(n for n in RewriteConfig.model_fields if n not in ("inputs", "output", "selection"))
RAY_FIELDS = tuple(RayOptions.model_fields)
SCORER_FIELDS = tuple(ScorerConfig.model_fields)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rewrite",
        help="score, select and rewrite a corpus into weighted parquet shards with a manifest",
        description="Score every INPUT (jsonl, jsonl.gz, jsonl.zst, parquet, or a datasets save_to_disk "
        "directory) with a teacher/reference pair (or a proxy distilled from it, or a cascade of both), "
        "select documents over the whole corpus, and write OUT/shards/*.parquet, OUT/report.json, plots "
        "and OUT/manifest.json (last). Resumable.",
    )
    add_engine_args(p, required=False)  # required unless --scorer proxy:DIR (checked in scorer_from_args)
    add_model_args(p.add_argument_group("scorer (default: the teacher/reference pair)"), ScorerConfig, SCORER_FIELDS)
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


def executor_from_args(args: argparse.Namespace, pair: PairSpec | None) -> tuple[Executor, PairSpec | None]:
    if args.executor == "local":
        return LocalExecutor(), pair
    from corpus.executor.ray import RayExecutor, ray_pair

    options = RayOptions(**model_kwargs(args, RAY_FIELDS, prefix="ray_"))
    if pair is not None:
        pair = ray_pair(pair, options)
    return RayExecutor(options), pair


def scorer_from_args(args: argparse.Namespace, config: RewriteConfig) -> tuple[ScorerConfig, PairSpec | None]:
    """The scorer options, checked with the selection, and the pair when the scorer needs it (its
    models validated, not loaded): every refusal comes before any output or Ray exists."""
    try:
        choice = ScorerConfig(**model_kwargs(args, SCORER_FIELDS))
        pair = None
        if choice.kind == "proxy":
            if args.teacher or args.reference:
                raise ConfigError(f"scorer={choice.scorer!r} scores with the proxy alone: --teacher and --reference are not used")
        elif not (args.teacher and args.reference):
            raise ConfigError("--teacher and --reference are required (or scorer=proxy:DIR to score with a proxy alone)")
        else:
            pair = pair_from_args(args)
        scorer_spec(choice, config.selection, pair)  # refuses what cannot combine, before any output exists
    except ConfigError as exc:
        raise as_flags(exc, (*SCORER_FIELDS, *SELECTION_FIELDS), flags={"method": "--select"}) from None
    return choice, pair


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
    choice, pair = scorer_from_args(args, config)
    executor, pair = executor_from_args(args, pair)
    spec: ScorerSpec = scorer_spec(choice, config.selection, pair)
    bars = ProgressBars(len(config.inputs))
    try:
        audit = choice.audit_documents if choice.kind == "cascade" else 0
        result = run_rewrite(config, spec, executor=executor, progress=bars, audit_documents=audit)
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
    for line in describe_scorer(result):
        print(f"  {line}")
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


def describe_scorer(result: RewriteResult) -> list[str]:
    """Who scored what (a proxy or a cascade), and the cascade's audit against the pair."""
    scorer = result.report.get("scorer")
    if scorer is None:
        return []
    by_pair, by_proxy = scorer["documents_by_pair"], scorer["documents_by_proxy"]
    total = max(by_pair + by_proxy, 1)
    lines = [f"scored by the pair: {by_pair} documents ({by_pair / total:.1%}); by the proxy alone: {by_proxy} ({by_proxy / total:.1%})"]
    engine = result.manifest.fingerprint.get("engine", {})
    if engine.get("scorer") == "cascade":
        chosen = ""
        if "band_auto_agreement" in engine:
            confidence = engine.get("band_auto_confidence")  # absent from manifests of older reweighs
            chosen = (f" (band=auto: the least band reaching agreement {engine['band_auto_agreement']:g}"
                      + (f" with confidence {confidence:g}" if confidence is not None else "")
                      + " on the proxy's calibration split)")
        lines.insert(0, f"cascade: alpha {engine['alpha']:g}, band {engine['band']:.2f}{chosen}")
    audit = scorer.get("audit")
    if audit is not None and audit["documents"]:
        lines.append(
            f"audit: the pair also scored {audit['documents']} of the {audit['population']} documents the proxy decided "
            f"alone (seed {audit['seed']}): same side of the threshold for {audit['agreement']:.1%} "
            f"({audit['kept_by_proxy_dropped_by_pair']} kept that the pair would drop, "
            f"{audit['dropped_by_proxy_kept_by_pair']} dropped that it would keep); "
            f"estimated agreement of the kept set with a pair-only run: {audit['estimated_selection_agreement']:.1%}"
            if audit["estimated_selection_agreement"] is not None
            else f"audit: {audit['documents']} documents, same side of the threshold for {audit['agreement']:.1%}"
        )
    elif audit is not None:
        lines.append("audit: no document was decided by the proxy alone, or none was kept: nothing to compare")
    return lines
