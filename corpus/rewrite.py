"""The bulk rewrite job: score every input shard, select over the whole corpus, plan and write the
output shards, then the report and the manifest (last). Directory layout: corpus/layout.py.

`run_rewrite` is the driver: it claims the directory and hands each step to an executor, which
decides where the step's tasks run (corpus/executor/) and records each finished task. The driver
holds only what the steps return (per-shard and per-chunk counts), never documents or scores.

The job directory may be a local path or an object-store prefix (s3://bucket/job; corpus/storage.py),
and inputs may be URLs or glob patterns of either (expanded once, in sorted order, when the job
starts). Every file is written atomically (on a store: uploaded whole) and every step is deterministic (fixed chunking, seeded selection,
fixed parquet options), so a job killed at any point and rerun with the same settings ends
byte-identical to one that never stopped, whichever executor ran it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from corpus import confine, storage
from corpus.config import RewriteConfig
from corpus.executor.base import Executor, Result, StepProgress, StepProgressFn
from corpus.executor.local import LocalExecutor
from corpus.fsutil import dumps_json
from corpus.layout import JOB_FILE, OWNED, WORK_DIR
from corpus.manifest import (
    MANIFEST_NAME,
    InputEntry,
    Manifest,
    ShardEntry,
    SkippedInput,
    Totals,
    load_manifest,
    write_manifest,
)
from corpus.readers import detect_format
from corpus.report import REPORT_NAME, write_report
from corpus.scorers import scorer_kind
from corpus.scores import ShardScores, schema_b64, unify_fields
from corpus.selection_files import KeptChunk
from corpus.steps.groups import LabelGroups
from corpus.steps.score import ScoreInputs, scored_shards, skipped_inputs
from corpus.steps.scorer_report import ScorerReport
from corpus.steps.select_run import run_selection
from corpus.steps.write import PlanShards, WriteShards
from corpus.storage import JobPath
from corpus.writers import ShardCut, output_schema
from scoring.errors import ConfigError, InputError, JobConflictError
from scoring.protocols import ScorerSpec

log = logging.getLogger(__name__)


@dataclass
class RewriteProgress:
    phase: str  # "scoring" | "selecting" | "auditing" (proxy, cascade) | "writing" | "reporting" | "done"
    documents: int  # documents done in this phase (scoring: read; writing: written, with repeats)
    tokens: int
    shards_done: int  # input shards (scoring) or output shards (writing)
    shards_total: int


@dataclass
class RewriteResult:
    output: JobPath
    manifest: Manifest
    report: dict[str, Any]
    already_done: bool  # the directory held this finished job: nothing was redone
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase


ProgressCallback = Callable[[RewriteProgress], None]


def run_rewrite(
    config: RewriteConfig,
    scorer: ScorerSpec,
    *,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    audit_documents: int = 0,
) -> RewriteResult:
    """Runs (or resumes) the job on `executor` (default: this process, closed at the end).

    `scorer` may be the pair, a proxy or a cascade (corpus/scorers.py). For a cascade,
    `audit_documents` documents the proxy decided alone are also scored by the pair, and the
    report says how often it agrees (corpus/steps/scorer_report.py)."""
    if not callable(getattr(scorer, "build", None)):
        raise TypeError(
            f"run_rewrite takes a ScorerSpec, not {type(scorer).__name__}: pass a spec the workers "
            "build (e.g. PairSpec), or wrap a scorer built here in scoring.protocols.BuiltScorer"
        )
    if executor is not None:
        return _Job(config, scorer, executor, progress, cancel, audit_documents).run()
    local = LocalExecutor()
    try:
        return _Job(config, scorer, local, progress, cancel, audit_documents).run()
    finally:
        local.close()


class _Job:
    def __init__(
        self,
        config: RewriteConfig,
        scorer: ScorerSpec,
        executor: Executor,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        audit_documents: int = 0,
    ) -> None:
        self.config, self.scorer, self.executor, self.cancel = config, scorer, executor, cancel
        self.audit_documents = audit_documents
        self.emit = progress or (lambda _p: None)
        self.out = storage.job_path(config.output)
        self.inputs = tuple(config.inputs)  # patterns until run() expands them
        self.phases: dict[str, float] = {}

    def run(self) -> RewriteResult:
        started = time.perf_counter()
        # Under the service's confinement: the output may have been swapped since submit.
        confine.check(self.out) if isinstance(self.out, Path) else confine.check_url(self.out.url)
        self.inputs = tuple(storage.expand_inputs(self.config.inputs))
        scorer_fingerprint = self.executor.fingerprint(self.scorer)
        self.kind = scorer_kind(scorer_fingerprint)
        if self.audit_documents and self.kind != "cascade":
            raise ConfigError(
                f"audit_documents={self.audit_documents} needs a cascade (a pair to audit the proxy with); "
                f"this job's scorer is the {self.kind}"
            )
        fingerprint = job_fingerprint(self.config, scorer_fingerprint, audit_documents=self.audit_documents)
        finished = self.claim(fingerprint)
        if finished is not None:
            finished.seconds = time.perf_counter() - started
            return finished
        formats = check_inputs(self.inputs, self.config.on_error)

        scored = self.timed("scoring", self.score)
        shards, skipped = scored_shards(scored), skipped_inputs(scored)
        upstream = _digest(scored)  # later steps' markers hold only for these scores
        selected = self.timed("selecting", lambda: self.select(shards, upstream))
        kept = tuple(KeptChunk(*k) for k in selected["kept"])
        scorers = None
        if self.kind != "pair":
            scorers = self.timed("auditing", lambda: self.report_scorers(shards, selected["report"], upstream))
        fields = unify_fields([s.fields_schema() for _, s in sorted(shards.items())])
        written = self.timed("writing", lambda: self.write(kept, fields, upstream))

        t0 = time.perf_counter()
        self.emit(RewriteProgress("reporting", 0, 0, 0, 1))
        report = {
            **selected["report"],
            "skipped_inputs": [{"path": p, "reason": r} for p, r in skipped],
            "output_shards": len(written),
        }
        if scorers is not None:
            report["scorer"] = {"kind": self.kind, **scorers}
        write_report(self.out, report)
        manifest = build_manifest(fingerprint, formats, self.inputs, shards, skipped, written, fields)
        write_manifest(self.out, manifest)  # last: it is what marks the job finished
        # The selection passes' work files are kept until here: a rerun after a kill merges them again.
        storage.remove(self.out / WORK_DIR)
        self.phases["reporting"] = time.perf_counter() - t0
        t = manifest.totals
        self.emit(RewriteProgress("done", t.documents_out, t.tokens_out, len(written), len(written)))
        return RewriteResult(
            self.out, manifest, report, already_done=False, seconds=time.perf_counter() - started, phases=self.phases
        )

    # ------------------------------------------------------------------------------------ steps

    def score(self) -> list[Result]:
        c = self.config
        step = ScoreInputs(self.out, self.inputs, self.scorer, c.text_field, c.id_field, c.chunk_docs, c.on_error)
        return self.executor.run(self.out, step, progress=self.progress("scoring", step.tasks), cancel=self.cancel)

    def select(self, shards: dict[int, ShardScores], upstream: str) -> Result:
        self.emit(RewriteProgress("selecting", 0, 0, 0, 1))
        c = self.config
        scored = tuple(sorted(shards.items()))
        field = c.groups
        labels: tuple[str, ...] = ()
        if field is not None:  # stratification, per-group report figures: each document's label
            labelling = LabelGroups(
                self.out, self.inputs, scored, field, c.text_field, c.id_field,
                c.chunk_docs, name=f"groups-{_digest([{'field': field}])}-{upstream}",
            )
            found = self.executor.run(self.out, labelling, cancel=self.cancel)
            labels = tuple(sorted({label for r in found for label in r["groups"]}))
        return run_selection(
            self.executor, self.out, self.inputs, scored, c.chunk_docs, c.selection, c.seed,
            name=f"select-{upstream}", cancel=self.cancel, group_field=field, labels=labels,
        )

    def report_scorers(self, shards: dict[int, ShardScores], selection: dict[str, Any], upstream: str) -> Result:
        self.emit(RewriteProgress("auditing", 0, 0, 0, 1))
        c = self.config
        step = ScorerReport(
            self.out, self.inputs, tuple(sorted(shards.items())), selection["threshold"],
            selection["documents"]["kept"], self.audit_documents, c.seed, c.text_field, c.id_field,
            scorer=self.scorer if self.audit_documents else None, name=f"scorer-report-{upstream}",
        )
        [result] = self.executor.run(self.out, step, cancel=self.cancel)
        return result

    def write(self, kept: tuple[KeptChunk, ...], fields: pa.Schema, upstream: str) -> list[Result]:
        plan = PlanShards(self.out, self.inputs, kept, *self.config.sizing, name=f"plan-{upstream}")
        [cuts] = self.executor.run(self.out, plan, cancel=self.cancel)
        step = WriteShards(
            self.out,
            self.inputs,
            kept,
            tuple(ShardCut(i, start, stop) for i, (start, stop) in enumerate(cuts["shards"])),
            schema_b64(fields),
            self.config.text_field,
            self.config.id_field,
            name=f"write-{upstream}",
        )
        return self.executor.run(self.out, step, progress=self.progress("writing", step.tasks), cancel=self.cancel)

    # ------------------------------------------------------------------------------------ helpers

    def claim(self, fingerprint: dict[str, Any]) -> RewriteResult | None:
        """Claims the directory; returns the finished job when it already holds this one."""
        identity = _job_identity(self.inputs, fingerprint)
        if _claim_directory(self.out, identity, self.config.overwrite) and storage.is_file(self.out / MANIFEST_NAME):
            manifest = load_manifest(self.out / MANIFEST_NAME)
            # A job that skipped inputs is not finished for on_error="fail": it retries them (and fails).
            if not (manifest.skipped_inputs and self.config.on_error == "fail"):
                report = storage.read_json(self.out / REPORT_NAME)
                storage.remove(self.out / WORK_DIR)  # left by a kill between the manifest and their removal
                return RewriteResult(self.out, manifest, report, already_done=True)
        storage.remove_stale_tmp(self.out)
        return None

    def timed(self, phase: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        self.phases[phase] = time.perf_counter() - t0
        return result

    def progress(self, phase: str, tasks: int) -> StepProgressFn:
        totals = [0, 0, 0]

        def on_step(p: StepProgress) -> None:
            totals[0] += p.documents
            totals[1] += p.tokens
            totals[2] += p.tasks_done
            self.emit(RewriteProgress(phase, totals[0], totals[1], totals[2], tasks))

        return on_step


def job_fingerprint(
    config: RewriteConfig, scorer_fingerprint: dict[str, Any], *, audit_documents: int = 0
) -> dict[str, Any]:
    """Everything that decides the output bytes, and its digest (goes into the manifest)."""
    body: dict[str, Any] = {
        "engine": scorer_fingerprint,
        "selection": config.selection.record(),
        "seed": config.seed,
        "text_field": config.text_field,
        "id_field": config.id_field,
        "chunk_docs": config.chunk_docs,  # chunking decides batch composition, hence the last float bits
        **({"group_field": config.group_field} if config.group_field is not None else {}),  # the report's groups
        "shard_rows": config.sizing[0],
        "shard_bytes": config.sizing[1],
        "code": {"reweigh": _version("reweigh"), "pyarrow": pa.__version__, "numpy": np.__version__},
    }
    if audit_documents:  # a cascade's audit decides the report (absent otherwise: pair digests unchanged)
        body["audit_documents"] = audit_documents
    body["digest"] = hashlib.sha256(dumps_json(body)).hexdigest()
    return body


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _digest(results: list[Result]) -> str:
    return hashlib.sha256(dumps_json(results)).hexdigest()[:12]


def _job_identity(paths: tuple[str, ...], fingerprint: dict[str, Any]) -> dict[str, Any]:
    inputs = [{"path": p, **storage.describe(storage.job_path(p))} for p in paths]
    # on_error is left out on purpose: after a job fails on a corrupt shard, rerunning it with
    # --on-error skip must resume it, not be refused as a different job.
    return {"fingerprint": fingerprint, "inputs": inputs}


def _claim_directory(out: JobPath, identity: dict[str, Any], overwrite: bool) -> bool:
    """True when `out` already holds this very job (finished or not). Refuses another job's directory."""
    job_file = out / JOB_FILE
    storage.make_dir(out)  # on a store: the bucket must exist (a clear error before anything else)
    if storage.is_file(job_file):
        previous = storage.read_json(job_file)
        if previous == json.loads(dumps_json(identity)):
            return True
        if not overwrite:
            raise JobConflictError(
                f"{str(out)!r} holds a job made with different settings ({_differences(previous, identity)}); "
                "use another directory, or overwrite to replace it"
            )
    elif storage.names_in(out) and not overwrite:
        raise JobConflictError(f"{str(out)!r} is not empty and holds no reweigh job; use an empty directory")
    if overwrite:
        for name in OWNED:
            storage.remove(out / name)
    storage.write_json(out / JOB_FILE, identity)
    return False


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    diffs = []
    new = json.loads(dumps_json(new))
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.append(_differences(a, b, f"{prefix}{key}."))
        else:
            diffs.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return "; ".join(d for d in diffs if d)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def check_inputs(inputs: tuple[str, ...], on_error: str) -> dict[str, str]:
    """Formats of the inputs, from their names, before any scoring: a typo fails in a second, not
    after hours. (No input is opened here: on Ray, only workers read inputs.)"""
    formats = {}
    for p in inputs:
        try:
            formats[p] = detect_format(p)
        except InputError:
            if on_error == "fail":
                raise
            formats[p] = "unknown"
    return formats


def build_manifest(
    fingerprint: dict[str, Any],
    formats: dict[str, str],
    inputs: tuple[str, ...],
    shards: dict[int, ShardScores],
    skipped: list[tuple[str, str]],
    written: list[Result],
    fields: pa.Schema,
) -> Manifest:
    """From what the steps returned: the scorer's per-input counts and the writers' per-shard ones."""
    entries = [ShardEntry(**w) for w in written]
    totals = Totals(
        documents_in=sum(s.rows for s in shards.values()),
        tokens_in=sum(s.tokens for s in shards.values()),
        rows_out=sum(e.rows for e in entries),
        documents_out=sum(e.documents for e in entries),
        tokens_out=sum(e.tokens for e in entries),
    )
    return Manifest(
        fingerprint=fingerprint,
        columns=output_schema(fields).names,
        shards=entries,
        totals=totals,
        inputs=[
            InputEntry(path=inputs[i], format=formats[inputs[i]], rows=s.rows) for i, s in sorted(shards.items())
        ],
        skipped_inputs=[SkippedInput(path=p, reason=r) for p, r in skipped],
    )


__all__ = ["RewriteConfig", "RewriteProgress", "RewriteResult", "job_fingerprint", "run_rewrite"]
