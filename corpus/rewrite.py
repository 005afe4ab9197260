"""The bulk rewrite job: score every input shard, select globally, write output shards, manifest last.

Layout of the output directory:

    job.json                      settings of the job (written first; a rerun must match it)
    scores/00000-<name>/          per input shard: chunk-NNNNN.parquet ..., then _DONE.json
    shards/part-00000.parquet     kept documents: original fields + score columns, repeats, weight
    report.json, *.png            counts, quantiles, threshold; histogram and scatter
    manifest.json                 written last: its presence is what makes the job finished

Every file is written atomically, each step skips work whose output is already on disk, and every
step is deterministic (fixed chunking, seeded selection, fixed parquet options), so a job killed at
any point and rerun with the same settings ends byte-identical to one that never stopped.

The steps are separately callable with plain inputs and outputs (`score_input_shard`,
`load_selection_inputs` + `corpus.sampler.select`, `plan_output_shards` + `write_output_shards`),
so a distributed executor can run them without this driver.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from corpus.fsutil import dumps_json, remove_stale_tmp, sha256_file, write_json_atomic
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
from corpus.readers import detect_format, status_kind
from corpus.report import HISTOGRAM_NAME, REPORT_NAME, SCATTER_NAME, build_report, write_plots, write_report
from corpus.sampler import HASH_BYTES, SelectionConfig, select
from corpus.scores import (
    SCORES_SCHEMA,
    SKIPPED_MARKER,
    Engine,
    ShardScoreSummary,
    read_shard_scores,
    score_input_shard,
    shard_key,
    unify_fields,
)
from corpus.settings import StrictModel
from corpus.writers import (
    ADDED_COLUMNS,
    SHARDS_DIR,
    KeptRows,
    OutputShard,
    output_schema,
    plan_output_shards,
    write_output_shards,
)
from scoring.errors import ConfigError, InputError, JobConflictError

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
SCORES_DIR = "scores"
DEFAULT_SHARD_BYTES = 64 << 20
# Names a job owns in its directory: what --overwrite removes (and nothing else).
_OWNED = (JOB_FILE, SCORES_DIR, SHARDS_DIR, REPORT_NAME, HISTOGRAM_NAME, SCATTER_NAME, MANIFEST_NAME)


class RewriteConfig(StrictModel):
    inputs: list[str] = Field(min_length=1)
    output: str
    selection: SelectionConfig = SelectionConfig()
    seed: int = Field(default=0, ge=0)
    text_field: str = "text"
    id_field: str = "id"
    shard_rows: int | None = Field(default=None, ge=1)
    shard_bytes: int | None = Field(
        default=None,
        ge=1,
        description=f"text bytes per output shard; default {DEFAULT_SHARD_BYTES} when neither is set",
    )
    on_error: Literal["fail", "skip"] = "fail"
    overwrite: bool = False
    chunk_docs: int = Field(default=2048, ge=1, description="documents per engine call and per checkpoint")

    @model_validator(mode="after")
    def _check(self) -> RewriteConfig:
        seen: set[str] = set()
        for p in self.inputs:
            if p in seen:
                raise ConfigError(f"input {p!r} is listed twice")
            seen.add(p)
        return self

    @property
    def sizing(self) -> tuple[int | None, int | None]:
        if self.shard_rows is None and self.shard_bytes is None:
            return None, DEFAULT_SHARD_BYTES
        return self.shard_rows, self.shard_bytes


@dataclass
class RewriteProgress:
    phase: str  # "scoring" | "selecting" | "writing" | "reporting" | "done"
    documents: int  # documents done in this phase (scoring: read; writing: written)
    tokens: int
    shards_done: int  # input shards (scoring) or output shards (writing)
    shards_total: int


@dataclass
class RewriteResult:
    output: Path
    manifest: Manifest
    report: dict[str, Any]
    already_done: bool  # the directory held this finished job: nothing was redone
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase


class JobEngine(Engine, Protocol):
    @property
    def fingerprint(self) -> Any: ...  # has .digest and .as_dict()


ProgressCallback = Callable[[RewriteProgress], None]
PrescoreFn = Callable[[Path, ProgressCallback], None]


def job_fingerprint(config: RewriteConfig, engine: JobEngine) -> dict[str, Any]:
    """Everything that decides the output bytes, and its digest (goes into the manifest)."""
    body = {
        "engine": engine.fingerprint.as_dict(),
        "selection": config.selection.model_dump(mode="json"),
        "seed": config.seed,
        "text_field": config.text_field,
        "id_field": config.id_field,
        "chunk_docs": config.chunk_docs,  # chunking decides batch composition, hence the last float bits
        "shard_rows": config.sizing[0],
        "shard_bytes": config.sizing[1],
        "code": {"reweigh": _version("reweigh"), "pyarrow": pa.__version__, "numpy": np.__version__},
    }
    body["digest"] = hashlib.sha256(dumps_json(body)).hexdigest()
    return body


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _job_identity(config: RewriteConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    for p in config.inputs:
        path = Path(p)
        st = path.stat() if path.exists() else None
        inputs.append(
            {"path": p, "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None}
        )
    # on_error is left out on purpose: after a job fails on a corrupt shard, rerunning it with
    # --on-error skip must resume it, not be refused as a different job.
    return {"fingerprint": fingerprint, "inputs": inputs}


def run_rewrite(
    config: RewriteConfig,
    engine: JobEngine,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    prescore: PrescoreFn | None = None,
) -> RewriteResult:
    """`prescore(out, emit)`, when given, runs after the directory is claimed and before step 1: a
    distributed executor (corpus/ray_engine.py) writes the shards' score files there, and step 1 then
    finds them done, so selection, shards and manifest come from this one code path."""
    started = time.perf_counter()
    out = Path(config.output)
    fingerprint = job_fingerprint(config, engine)
    identity = _job_identity(config, fingerprint)
    if _claim_directory(out, identity, config.overwrite) and (out / MANIFEST_NAME).is_file():
        manifest = load_manifest(out / MANIFEST_NAME)
        # A job that skipped inputs is not finished for on_error="fail": it retries them (and fails).
        if not (manifest.skipped_inputs and config.on_error == "fail"):
            report = json.loads((out / REPORT_NAME).read_text())
            return RewriteResult(
                out, manifest, report, already_done=True, seconds=time.perf_counter() - started
            )
    remove_stale_tmp(out)
    phases: dict[str, float] = {}
    emit = progress or (lambda _p: None)

    # 1. Score every input shard.
    t0 = time.perf_counter()
    formats = _check_inputs(config)
    if prescore is not None:
        prescore(out, emit)
    summaries, skipped = _score_all(config, engine, out, emit, cancel)
    phases["scoring"] = time.perf_counter() - t0

    # 2. Select over the whole corpus.
    t0 = time.perf_counter()
    emit(RewriteProgress("selecting", 0, 0, 0, 1))
    arrays, not_scored = load_selection_inputs(out, config, summaries)
    sel = select(
        config.selection,
        score=arrays["score"],
        teacher_logprob=arrays["teacher_logprob"],
        n_tokens=arrays["n_tokens"],
        ok=arrays["ok"],
        content_hash=arrays["content_hash"],
        seed=config.seed,
    )
    phases["selecting"] = time.perf_counter() - t0

    # 3. Write the output shards.
    t0 = time.perf_counter()
    kept = kept_rows(config, summaries, arrays, sel.repeats, sel.weight)
    kept_mask = sel.repeats > 0
    plan = plan_output_shards(arrays["text_bytes"][kept_mask], *config.sizing)
    fields = unify_fields([s.fields_schema() for s in summaries.values()])
    written = [0, 0]

    def on_shard(_shard: OutputShard, docs: int) -> None:
        written[0] += 1
        written[1] += docs
        emit(RewriteProgress("writing", written[1], 0, written[0], len(plan)))

    write_output_shards(
        out,
        kept,
        plan,
        fields,
        text_field=config.text_field,
        id_field=config.id_field,
        cancel=cancel,
        on_shard=on_shard,
    )
    phases["writing"] = time.perf_counter() - t0

    # 4. Report and plots, then the manifest: last, because it is what marks the job finished.
    t0 = time.perf_counter()
    emit(RewriteProgress("reporting", 0, 0, 0, 1))
    skipped_list = [{"path": p, "reason": r} for p, r in skipped]
    report = build_report(
        ok=arrays["ok"],
        not_scored=not_scored,
        score=arrays["score"],
        n_tokens=arrays["n_tokens"],
        repeats=sel.repeats,
        weight=sel.weight,
        dropped=sel.dropped,
        threshold=sel.threshold,
        selection={**config.selection.model_dump(mode="json"), "seed": config.seed, "soft_scale": sel.scale},
        skipped_inputs=skipped_list,
        shards=len(plan),
    )
    # With a proxy or a cascade, documents the pair did not run on have no teacher log-prob.
    report["documents"]["scored_by_pair"] = int((arrays["ok"] & np.isfinite(arrays["teacher_logprob"])).sum())
    write_report(out, report)
    write_plots(
        out,
        score=arrays["score"],
        teacher_logprob=arrays["teacher_logprob"],
        reference_logprob=arrays["reference_logprob"],
        ok=arrays["ok"],
        kept=kept_mask,
        threshold=sel.threshold,
        seed=config.seed,
    )
    manifest = build_manifest(
        out, config, fingerprint, formats, summaries, skipped, plan, fields, arrays, sel.repeats
    )
    write_manifest(out, manifest)
    phases["reporting"] = time.perf_counter() - t0
    emit(
        RewriteProgress(
            "done", manifest.totals.documents_out, manifest.totals.tokens_out, len(plan), len(plan)
        )
    )
    return RewriteResult(
        out, manifest, report, already_done=False, seconds=time.perf_counter() - started, phases=phases
    )


def _claim_directory(out: Path, identity: dict[str, Any], overwrite: bool) -> bool:
    """True when `out` already holds this very job (finished or not). Refuses another job's directory."""
    job_file = out / JOB_FILE
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous == json.loads(dumps_json(identity)):
            return True
        if not overwrite:
            raise JobConflictError(
                f"{str(out)!r} holds a job made with different settings ({_differences(previous, identity)}); "
                "use another directory, or overwrite to replace it"
            )
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise JobConflictError(f"{str(out)!r} is not empty and holds no reweigh job; use an empty directory")
    if overwrite:
        for name in _OWNED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / JOB_FILE, identity)
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


def _check_inputs(config: RewriteConfig) -> dict[str, str]:
    """Formats of the inputs, checked before any scoring: a typo fails in a second, not after hours."""
    formats = {}
    for p in config.inputs:
        try:
            formats[p] = detect_format(p)
        except InputError:
            if config.on_error == "fail":
                raise
            formats[p] = "unknown"
    return formats


def _score_all(
    config: RewriteConfig,
    engine: JobEngine,
    out: Path,
    emit: ProgressCallback,
    cancel: threading.Event | None,
) -> tuple[dict[int, ShardScoreSummary], list[tuple[str, str]]]:
    summaries: dict[int, ShardScoreSummary] = {}
    skipped: list[tuple[str, str]] = []
    totals = [0, 0]

    def on_docs(docs: int, tokens: int) -> None:
        totals[0] += docs
        totals[1] += tokens
        emit(
            RewriteProgress(
                "scoring", totals[0], totals[1], len(summaries) + len(skipped), len(config.inputs)
            )
        )

    for index, path in enumerate(config.inputs):
        shard_dir = out / SCORES_DIR / shard_key(index, path)
        marker = shard_dir / SKIPPED_MARKER
        if marker.is_file():
            if config.on_error == "skip":
                skipped.append((path, json.loads(marker.read_text())["reason"]))
                continue
            marker.unlink()  # on_error="fail" now: try the shard again, and fail if it still cannot be read
        try:
            summaries[index] = score_input_shard(
                path,
                engine,
                shard_dir,
                text_field=config.text_field,
                id_field=config.id_field,
                chunk_docs=config.chunk_docs,
                cancel=cancel,
                progress=on_docs,
            )
        except InputError as exc:
            if config.on_error == "fail":
                raise InputError(
                    f"input shard {index} failed (the job stops; --on-error skip would skip it): {exc}"
                ) from exc
            log.warning("skipping input %s: %s", path, exc)
            write_json_atomic(marker, {"path": path, "reason": str(exc)})
            skipped.append((path, str(exc)))
        emit(
            RewriteProgress(
                "scoring", totals[0], totals[1], len(summaries) + len(skipped), len(config.inputs)
            )
        )
    return summaries, skipped


_SELECTION_COLUMNS = (
    "row",
    "content_hash",
    "text_bytes",
    "n_tokens",
    "teacher_logprob",
    "reference_logprob",
    "score",
    "status",
)


def load_selection_inputs(
    out: Path, config: RewriteConfig, summaries: dict[int, ShardScoreSummary]
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, int]]:
    """Stored scores of every scored input shard, concatenated in input order (plus `input`, the
    input index, and `ok`), and the count of documents not scored, by reason kind.

    Statuses stay in arrow (a Python string per document would cost ~60 bytes each)."""
    tables, owner = [], []
    for index in sorted(summaries):
        table = read_shard_scores(
            out / SCORES_DIR / shard_key(index, config.inputs[index]), summaries[index], _SELECTION_COLUMNS
        )
        tables.append(table)
        owner.append(np.full(len(table), index, dtype=np.int64))
    empty = SCORES_SCHEMA.empty_table().select(list(_SELECTION_COLUMNS))
    table = pa.concat_tables(tables) if tables else empty
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name in ("row", "text_bytes", "n_tokens"):
        arrays[name] = np.asarray(table.column(name).to_numpy(), dtype=np.int64)
    for name in ("teacher_logprob", "reference_logprob", "score"):  # nulls (not scored) -> NaN
        arrays[name] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
    status = table.column("status")
    ok = pc.equal(status, "ok")
    arrays["ok"] = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    not_scored: Counter[str] = Counter()
    for item in pc.value_counts(pc.filter(status, pc.invert(ok))).to_pylist():
        not_scored[status_kind(item["values"])] += item["counts"]
    arrays["content_hash"] = _hash_prefixes(table.column("content_hash"), len(table))
    arrays["input"] = np.concatenate(owner) if owner else np.zeros(0, np.int64)
    return arrays, dict(sorted(not_scored.items()))


def _hash_prefixes(column: pa.ChunkedArray, n: int) -> npt.NDArray[np.bytes_]:
    out = np.zeros(n, dtype=f"S{HASH_BYTES}")
    start = 0
    for chunk in column.chunks:
        filled = chunk.fill_null(b"\0" * 32)
        raw = np.frombuffer(filled.buffers()[1], dtype="S32", count=len(filled) + filled.offset)[
            filled.offset :
        ]
        out[start : start + len(filled)] = raw.astype(f"S{HASH_BYTES}")
        start += len(filled)
    return out


def kept_rows(
    config: RewriteConfig,
    summaries: dict[int, ShardScoreSummary],
    arrays: dict[str, npt.NDArray[Any]],
    repeats: npt.NDArray[np.int64],
    weight: npt.NDArray[np.float64],
) -> list[KeptRows]:
    out = []
    for index in sorted(summaries):
        mask = (arrays["input"] == index) & (repeats > 0)
        values = {
            "score": arrays["score"][mask],
            "teacher_logprob": arrays["teacher_logprob"][mask],
            "reference_logprob": arrays["reference_logprob"][mask],
            "n_tokens": arrays["n_tokens"][mask],
            "repeats": repeats[mask],
            "weight": weight[mask],
        }
        out.append(KeptRows(index, config.inputs[index], arrays["row"][mask], values))
    return out


def build_manifest(
    out: Path,
    config: RewriteConfig,
    fingerprint: dict[str, Any],
    formats: dict[str, str],
    summaries: dict[int, ShardScoreSummary],
    skipped: list[tuple[str, str]],
    plan: list[OutputShard],
    fields: pa.Schema,
    arrays: dict[str, npt.NDArray[Any]],
    repeats: npt.NDArray[np.int64],
) -> Manifest:
    kept = repeats > 0
    kept_repeats = repeats[kept]
    kept_tokens = arrays["n_tokens"][kept] * kept_repeats
    shards = []
    for s in plan:
        path = out / s.path
        shards.append(
            ShardEntry(
                path=s.path,
                rows=s.stop - s.start,
                documents=int(kept_repeats[s.start : s.stop].sum()),
                tokens=int(kept_tokens[s.start : s.stop].sum()),
                bytes=path.stat().st_size,
                sha256=sha256_file(path),
            )
        )
    ok = arrays["ok"]
    totals = Totals(
        documents_in=len(ok),
        tokens_in=int(arrays["n_tokens"][ok].sum()),
        rows_out=int(kept.sum()),
        documents_out=int(kept_repeats.sum()),
        tokens_out=int(kept_tokens.sum()),
    )
    return Manifest(
        fingerprint=fingerprint,
        columns=output_schema(fields).names,
        shards=shards,
        totals=totals,
        inputs=[
            InputEntry(path=config.inputs[i], format=formats[config.inputs[i]], rows=s.rows)
            for i, s in sorted(summaries.items())
        ],
        skipped_inputs=[SkippedInput(path=p, reason=r) for p, r in skipped],
    )


__all__ = [
    "ADDED_COLUMNS",
    "RewriteConfig",
    "RewriteProgress",
    "RewriteResult",
    "job_fingerprint",
    "kept_rows",
    "load_selection_inputs",
    "run_rewrite",
]
