"""Rewrite jobs: a SQLite store (survives restarts) and one runner thread that works through it.

States: queued -> running -> succeeded | failed | cancelled, and succeeded -> superseded when its
owner submits a job with `overwrite` on the same output (the old job's manifest then answers 410,
never the new content). A job that was `running` when the process died is put back in the queue at
startup, ahead of jobs never started; since corpus rewrites resume from what they left on disk, it
ends with the same output as an uninterrupted run.

A job belongs to the name of the API key that created it (service/keys.py): other keys neither see
it nor reach it (404), and none may write into its output directory (409). Admin keys see all.
Every file a job opens is confined to the data roots at the moment it is opened (corpus/confine.py).

Jobs run one at a time: they share the service's single engine with HTTP scoring (see batcher.py).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpus import confine, storage
from corpus.config import RewriteConfig
from corpus.rewrite import RewriteProgress, RewriteResult, run_rewrite
from corpus.storage import JobPath
from scoring.config import PairSpec
from scoring.errors import (
    EngineNotReadyError,
    JobCancelledError,
    JobConflictError,
    JobStateError,
    NotFoundError,
    ReweighError,
)
from scoring.protocols import BuiltScorer
from service.batcher import JobEngine
from service.keys import Principal
from service.paths import scrub
from service.queue import QueueRunner
from service.settings import Settings
from service.sqlstore import SqliteStore

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "superseded")
# Progress is written to SQLite at most this often: it is for humans, not for resuming.
PROGRESS_EVERY_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    request TEXT NOT NULL,      -- the body as the client sent it (validated)
    config TEXT NOT NULL,       -- the RewriteConfig with resolved paths
    output TEXT NOT NULL,       -- resolved output directory
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT ''  -- the creating key's name ('' for jobs from before owners)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
"""

# (config, engine, progress, cancel) -> result: `run_local`, or the Ray executor chosen by `job_executor`.
JobExecutor = Callable[
    [RewriteConfig, JobEngine, Callable[[RewriteProgress], None], threading.Event], RewriteResult
]


def run_local(
    config: RewriteConfig,
    engine: JobEngine,
    progress: Callable[[RewriteProgress], None],
    cancel: threading.Event,
) -> RewriteResult:
    """On this process's engine, queued behind HTTP scoring (service/batcher.py)."""
    return run_rewrite(config, BuiltScorer(engine), progress=progress, cancel=cancel)


def job_executor(settings: Settings) -> JobExecutor:
    """Local by default; on Ray with `job_executor="ray"` (refused at start-up, before any model
    loads, when ray is not installed or the options cannot work). The Ray executor is made at the
    first job and kept: its actors hold the pair loaded for every later job."""
    if settings.job_executor == "local":
        return run_local
    from corpus.executor.ray import RayExecutor, ray_pair, require_ray

    require_ray()
    assert settings.teacher and settings.reference  # checked by Settings
    pair = ray_pair(PairSpec(settings.teacher, settings.reference, settings.engine_config()), settings.ray)
    executors: list[RayExecutor] = []

    def execute(
        config: RewriteConfig, _engine: JobEngine, progress: Callable[[RewriteProgress], None], cancel: threading.Event
    ) -> RewriteResult:
        if not executors:
            executors.append(RayExecutor(settings.ray, keep_connection=True))
        return run_rewrite(config, pair, executor=executors[0], progress=progress, cancel=cancel)

    return execute


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    request: dict[str, Any]
    config: RewriteConfig
    output: JobPath  # a local directory, or an object-store prefix under a URL data root
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    progress: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    owner: str


class JobStore(SqliteStore):
    """The jobs table: the runner thread and the event loop both use it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "owner" not in columns:  # a store from before owners: its jobs are left to admin keys
            self._db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")

    def create(self, request: dict[str, Any], config: RewriteConfig, owner: str) -> Job:
        job_id = uuid.uuid4().hex
        shown = request["output"]
        with self._transaction() as db:
            # Two live jobs writing one directory would corrupt each other.
            busy = db.execute(
                "SELECT id, owner FROM jobs WHERE output = ? AND state IN ('queued', 'running')",
                (config.output,),
            ).fetchone()
            if busy is not None:
                whose = "" if busy[1] == owner else "another key's "
                raise JobStateError(f"{whose}job {busy[0]} is already writing output {shown!r}")
            # Another key's output (finished or resumable) is never taken over, overwrite or not.
            foreign = db.execute(
                "SELECT id FROM jobs WHERE output = ? AND owner != ? AND state != 'superseded' LIMIT 1",
                (config.output, owner),
            ).fetchone()
            if foreign is not None:
                raise JobConflictError(f"output {shown!r} belongs to another key's job; choose another")
            if config.overwrite:
                # The new job replaces the files: the old one must never serve them as its own.
                db.execute(
                    "UPDATE jobs SET state = 'superseded' WHERE output = ? AND state = 'succeeded'",
                    (config.output,),
                )
            db.execute(
                "INSERT INTO jobs (id, state, request, config, output, created_at, owner) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                (
                    job_id,
                    json.dumps(request),
                    config.model_dump_json(exclude_unset=True),
                    config.output,
                    time.time(),
                    owner,
                ),
            )
        return self.get(job_id)

    def get(self, job_id: str, principal: Principal | None = None) -> Job:
        """The job; with `principal`, only if it may see it (else the same 404 as an unknown id)."""
        rows = self._exec("SELECT * FROM jobs WHERE id = ?", (job_id,)) if _JOB_ID.fullmatch(job_id) else []
        if not rows or (principal is not None and not _may_see(principal, rows[0]["owner"])):
            raise NotFoundError(f"no job {job_id!r}")
        return _job(rows[0])

    def list_jobs(self, principal: Principal, state: str | None = None, limit: int = 100) -> list[Job]:
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if not principal.admin:
            where.append("owner = ?")
            args.append(principal.name)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._exec(sql + " ORDER BY created_at DESC LIMIT ?", (*args, limit))
        return [_job(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._exec("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def requeue_interrupted(self) -> list[str]:
        """At startup: jobs left `running` by a dead process go back to the queue (they resume)."""
        rows = self._exec("SELECT id FROM jobs WHERE state = 'running'")
        self._exec("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
        return [r[0] for r in rows]

    def claim_next(self) -> Job | None:
        """The next queued job, marked running: interrupted ones first, then oldest first."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY attempts > 0 DESC, created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?), attempts = attempts + 1 "
                "WHERE id = ?",
                (time.time(), row[0]),
            )
        return self.get(row[0])

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._exec("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        assert state in FINISHED or state == "queued"
        finished = time.time() if state in FINISHED else None
        self._exec(
            "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
            (state, error, finished, job_id),
        )

    def request_cancel(self, job_id: str, principal: Principal | None = None) -> Job:
        """Queued: cancelled at once. Running: flagged (the runner stops at the next chunk)."""
        job = self.get(job_id, principal)
        if job.state in FINISHED:
            raise JobStateError(f"job {job_id} already {job.state}; there is nothing to cancel")
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 1 "
                "WHERE id = ? AND state = 'queued'",
                (time.time(), job_id),
            )
            self._db.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,)
            )
        return self.get(job_id)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        state=row["state"],
        request=json.loads(row["request"]),
        config=RewriteConfig.model_validate_json(row["config"]),
        output=storage.job_path(row["output"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        progress=json.loads(row["progress"]) if row["progress"] else None,
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
        owner=row["owner"],
    )


# Job ids are uuid4 hex: anything else is unknown without asking SQLite (it cannot store a lone
# surrogate, and a megabyte id need not be looked up).
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def _may_see(principal: Principal, owner: str) -> bool:
    return principal.admin or principal.name == owner


class JobRunner(QueueRunner[Job]):
    """One thread: claim a job, run it, record how it ended; repeat until stopped."""

    def __init__(
        self,
        store: JobStore,
        engine: JobEngine,
        executor: JobExecutor = run_local,
        roots: Sequence[Path | str] = (),
        on_success: Callable[[Job], None] | None = None,
    ) -> None:
        super().__init__("job-runner")
        self.store = store
        self.engine = engine
        self.executor = executor
        self.confinement = list(roots)  # every file a job opens must stay under these (checked at open)
        self.roots = [r for r in roots if isinstance(r, Path)]  # local ones: cut from messages
        # Called once the job's output is complete, before the job is marked succeeded (so that a
        # restart in between calls it again): the service queues the job's exports there.
        self.on_success = on_success

    def cancel(self, job_id: str, principal: Principal | None = None) -> Job:
        """A queued job is cancelled at once; a running one stops at its next chunk, resumable."""
        job = self.store.request_cancel(job_id, principal)
        self._signal_cancel(job_id)
        return job

    def _requeue_interrupted(self) -> None:
        for job_id in self.store.requeue_interrupted():
            log.info("job %s was running when the service stopped: resuming it", job_id)

    def _claim(self) -> Job | None:
        return self.store.claim_next()

    def _id(self, job: Job) -> str:
        return job.id

    def _cancel_requested(self, job: Job) -> bool:
        return self.store.get(job.id).cancel_requested

    def _run_one(self, job: Job) -> None:
        log.info("job %s: %s", job.id, "resuming" if job.attempts > 1 else "starting")
        last = [0.0]
        latest: list[RewriteProgress] = []

        def progress(p: RewriteProgress) -> None:
            latest[:] = [p]
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or p.phase == "done":
                last[0] = now
                self.store.set_progress(job.id, _progress_dict(p))

        def fail(error: str) -> None:
            # The last progress, not the last one written (throttled): where it really stopped.
            if latest:
                self.store.set_progress(job.id, _progress_dict(latest[0]))
            phase = f" (while {latest[0].phase})" if latest else ""
            # Clients read it: paths relative to the data roots, as they named them.
            self.store.finish(job.id, "failed", scrub(error, self.roots) + phase)

        try:
            with confine.confined_to(self.confinement):
                result = self.executor(job.config, self.engine, progress, self._cancel)
        except (JobCancelledError, EngineNotReadyError) as exc:
            if self._stopping.is_set():
                # Shutdown, not the user's cancel: leave it to resume at the next start.
                log.info("job %s interrupted by shutdown; it resumes at the next start", job.id)
                self.store.finish(job.id, "queued")
            else:
                self.store.finish(job.id, "cancelled", str(exc))
            return
        except ReweighError as exc:
            log.warning("job %s failed: %s", job.id, exc)
            fail(f"{type(exc).__name__}: {exc}")
            return
        except OSError as exc:  # the machine's side (disk full, permissions): say which and where
            log.warning("job %s failed: %s", job.id, exc)
            fail(describe_os_error(exc, self.roots))
            return
        except Exception as exc:  # a bug: record it on the job (its trace goes to the log, not the API)
            log.exception("job %s failed unexpectedly", job.id)
            fail(f"internal error ({type(exc).__name__}); see the server log")
            return
        totals = result.manifest.totals
        self.store.set_progress(
            job.id,
            {
                "phase": "done",
                "documents": totals.documents_in,
                "tokens": totals.tokens_in,
                "shards_done": len(result.manifest.shards),
                "shards_total": len(result.manifest.shards),
            },
        )
        if self.on_success is not None:
            try:
                self.on_success(job)
            except Exception as exc:
                log.exception("job %s: its completion hook failed", job.id)
                fail(f"internal error after the job's output was written ({type(exc).__name__}); see the server log")
                return
        self.store.finish(job.id, "succeeded")
        log.info(
            "job %s succeeded (%s)",
            job.id,
            "already done" if result.already_done else f"{result.seconds:.1f}s",
        )


def describe_os_error(exc: OSError, roots: Sequence[Path]) -> str:
    """`OSError: no space left on device while writing out/shards/part-00000.parquet`: the cause
    and the path relative to its data root (clients never see server paths)."""
    code = exc.errno
    cause = os.strerror(code).lower() if code is not None else (exc.strerror or str(exc))
    if exc.filename is None:
        return f"OSError: {cause}"
    path = Path(os.fsdecode(exc.filename))
    for root in roots:
        if path.is_relative_to(root):
            path = path.relative_to(root)
            break
    else:
        path = Path(path.name)
    verb = "writing" if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG) else "opening"
    return f"OSError: {cause} while {verb} {path}"


def _progress_dict(p: RewriteProgress) -> dict[str, Any]:
    return {
        "phase": p.phase,
        "documents": p.documents,
        "tokens": p.tokens,
        "shards_done": p.shards_done,
        "shards_total": p.shards_total,
    }
