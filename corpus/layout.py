"""Names inside a job directory, in the order a job writes them.

    job.json                      settings of the job (written first; a rerun must match it)
    scores/00000-<name>/          per input shard: chunk-NNNNN.parquet, one per chunk of chunk_docs rows
    groups/<field>/00000-<name>/  with stratify_by: per input shard, each chunk's group labels
    selection/00000-<name>/       per input shard: the kept rows of each chunk and what is added to them
    work/<select step>/           the selection passes' scratch files (dedup partitions), removed after
    steps/<step>/NNNNN.json       completion markers: a finished task's result (corpus/executor/base.py)
    shards/part-00000.parquet     kept documents: original fields + score columns, repeats, weight
    report.json, *.png            counts, quantiles, threshold; histogram and scatter
    manifest.json                 written last: its presence is what makes the job finished
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from corpus.executor.base import STEPS_DIR
from corpus.manifest import MANIFEST_NAME
from corpus.report import HISTOGRAM_NAME, REPORT_NAME, SCATTER_NAME
from corpus.storage import JobPath

JOB_FILE = "job.json"
SCORES_DIR = "scores"
GROUPS_DIR = "groups"
SELECTION_DIR = "selection"
WORK_DIR = "work"
SHARDS_DIR = "shards"
EXPORTS_DIR = "exports"  # the service's exports of the job (exports/<format>/): made from its manifest
# Names a job owns in its directory: what --overwrite removes (and nothing else).
OWNED = (
    JOB_FILE,
    SCORES_DIR,
    GROUPS_DIR,
    SELECTION_DIR,
    WORK_DIR,
    STEPS_DIR,
    SHARDS_DIR,
    REPORT_NAME,
    HISTOGRAM_NAME,
    SCATTER_NAME,
    MANIFEST_NAME,
    EXPORTS_DIR,
)


def shard_key(index: int, path: str | Path) -> str:
    """Directory name of an input shard's files: its position (keeps order) and a readable name
    (the last component of a path or URL, so a job keeps its layout whatever store it reads)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(path).rstrip("/").rsplit("/", 1)[-1])[:80]
    return f"{index:05d}-{name}"


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.parquet"


def scores_dir(out: JobPath, index: int, path: str) -> JobPath:
    return out / SCORES_DIR / shard_key(index, path)


def groups_dir(out: JobPath, field: str, index: int, path: str) -> JobPath:
    """Labels of `field` for an input shard: a readable name plus a digest, as any string may be a field."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", field)[:40] + "-" + hashlib.sha256(field.encode()).hexdigest()[:8]
    return out / GROUPS_DIR / key / shard_key(index, path)


def selection_dir(out: JobPath, index: int, path: str) -> JobPath:
    return out / SELECTION_DIR / shard_key(index, path)


def output_shard_path(index: int) -> str:
    return f"{SHARDS_DIR}/part-{index:05d}.parquet"
