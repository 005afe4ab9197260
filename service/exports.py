"""Exports of finished jobs (corpus/export), run in the background: a table beside the jobs, in the
same SQLite file, and one runner thread.

An export is asked for over HTTP (`POST /v1/jobs/{id}/exports`, origin "request") or as a job option
(`exports` in the job request, origin "job"): those are queued when the job succeeds, that is after
its manifest, which completes the rewrite; each export completes with its own `export.json`, written
last in a directory that is renamed into place whole. An export belongs to its job's owner.

States: queued -> running -> succeeded | failed | cancelled. A DELETE cancels a queued export at
once and stops a running one between row groups (its staged directory is removed; one that has
already renamed its directory into place has succeeded: too late to cancel). An export left running
by a dead process is queued again at startup (cancelled if its cancellation was asked for); if its
directory was finished before the process died (its record names the job's manifest), that is
taken as its result rather than refused as "exists".

Exports run beside jobs, not behind them: they need no engine, only CPU and disk.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpus import confine, storage
from corpus.export import EXPORT_RECORD, ExportConfig, ExportOptions, export_config, run_export
from corpus.layout import EXPORTS_DIR
from corpus.manifest import MANIFEST_NAME, load_manifest
from corpus.storage import JobPath
from scoring.errors import JobCancelledError, JobStateError, NotFoundError, ReweighError
from service.jobs import Job, JobStore, describe_os_error
from service.paths import scrub
from service.queue import QueueRunner
from service.sqlstore import SqliteStore

log = logging.getLogger(__name__)


_ID = re.compile(r"[0-9a-f]{32}")  # uuid4 hex, as job ids

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,        -- the job's owner, copied: the export is reached through the job
    origin TEXT NOT NULL,       -- 'job' (the job request's `exports`) or 'request' (the export route)
    format TEXT NOT NULL,
    options TEXT NOT NULL,      -- the ExportOptions as asked (JSON)
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    record TEXT,                -- export.json's content, once succeeded
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS exports_job ON exports(job_id, created_at);
CREATE INDEX IF NOT EXISTS exports_state ON exports(state, created_at);
"""


@dataclass(frozen=True)
class Export:
    id: str
    job_id: str
    owner: str
    origin: str
    options: ExportOptions
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    record: dict[str, Any] | None
    cancel_requested: bool


def export_directory(output: JobPath, fmt: str) -> JobPath:
    return output / EXPORTS_DIR / fmt


def export_config_for(output: JobPath, options: ExportOptions, teacher: str | None) -> ExportConfig:
    """The whole ExportConfig of `options` for the job writing `output`, on disk or in a store
    (ConfigError, a 422, on a bad combination). Megatron tokenizes with the teacher's tokenizer: the
    one the scores were computed with."""
    return export_config(
        **options.model_dump(),
        manifest=str(output / MANIFEST_NAME),
        out=str(export_directory(output, options.format)),
        tokenizer=teacher if options.format == "megatron" else None,
    )


class ExportStore(SqliteStore):
    """The exports table, through its own connection to the jobs database."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(exports)")}
        if "cancel_requested" not in columns:  # a store from before exports could be cancelled
            self._db.execute("ALTER TABLE exports ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")

    def create(self, job: Job, options: Sequence[ExportOptions], origin: str) -> list[Export]:
        """Queue `options` for `job` (one transaction). A format with a live export of the job is
        refused (both would write one directory); "job" exports are queued once per job."""
        ids = []
        with self._transaction() as db:
            if origin == "job" and db.execute(
                "SELECT 1 FROM exports WHERE job_id = ? AND origin = 'job'", (job.id,)
            ).fetchone():
                return []  # already queued, before a restart
            for option in options:
                busy = db.execute(
                    "SELECT id FROM exports WHERE job_id = ? AND format = ? AND state IN ('queued', 'running')",
                    (job.id, option.format),
                ).fetchone()
                if busy is not None:
                    raise JobStateError(f"export {busy[0]} of job {job.id} is already writing its {option.format} export")
                ids.append(uuid.uuid4().hex)
                db.execute(
                    "INSERT INTO exports (id, job_id, owner, origin, format, options, state, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                    (ids[-1], job.id, job.owner, origin, option.format, option.model_dump_json(), time.time()),
                )
        return [self.get(job.id, i) for i in ids]

    def get(self, job_id: str, export_id: str) -> Export:
        """The export of that job (the caller has already been allowed to see the job)."""
        ok = _ID.fullmatch(export_id) is not None  # else unknown, without asking SQLite (see jobs._JOB_ID)
        rows = self._exec("SELECT * FROM exports WHERE id = ? AND job_id = ?", (export_id, job_id)) if ok else []
        if not rows:
            raise NotFoundError(f"job {job_id} has no export {export_id!r}")
        return _export(rows[0])

    def for_job(self, job_id: str) -> list[Export]:
        rows = self._exec("SELECT * FROM exports WHERE job_id = ? ORDER BY created_at", (job_id,))
        return [_export(r) for r in rows]

    def live_on_output(self, output: str) -> str | None:
        """A queued or running export reading that output directory (a job replacing it must wait)."""
        rows = self._exec(
            "SELECT e.id FROM exports e JOIN jobs j ON j.id = e.job_id "
            "WHERE j.output = ? AND e.state IN ('queued', 'running') LIMIT 1",
            (output,),
        )
        return rows[0][0] if rows else None

    def requeue_interrupted(self) -> list[str]:
        """At startup: exports left `running` by a dead process are redone, unless their
        cancellation had been asked for (then they are cancelled: their directory never appeared)."""
        with self._transaction() as db:
            rows = db.execute("SELECT id FROM exports WHERE state = 'running' AND cancel_requested = 0").fetchall()
            db.execute(
                "UPDATE exports SET state = 'cancelled', finished_at = ? WHERE state = 'running' AND cancel_requested = 1",
                (time.time(),),
            )
            db.execute("UPDATE exports SET state = 'queued' WHERE state = 'running'")
        return [r[0] for r in rows]

    def request_cancel(self, job_id: str, export_id: str) -> Export:
        """Queued: cancelled at once. Running: flagged (the runner stops it at its next row group)."""
        export = self.get(job_id, export_id)
        if export.state not in ("queued", "running"):
            raise JobStateError(f"export {export_id} already {export.state}; there is nothing to cancel")
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = 'cancelled', finished_at = ?, cancel_requested = 1 "
                "WHERE id = ? AND state = 'queued'",
                (time.time(), export_id),
            )
            db.execute("UPDATE exports SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (export_id,))
        return self.get(job_id, export_id)

    def claim_next(self) -> tuple[Export, str] | None:
        """The oldest queued export whose job has finished, marked running, with the job's state
        (an export queued for a job that was superseded since must not run)."""
        with self._lock:
            row = self._db.execute(
                "SELECT e.id, e.job_id, j.state FROM exports e JOIN jobs j ON j.id = e.job_id "
                "WHERE e.state = 'queued' AND j.state NOT IN ('queued', 'running') "
                "ORDER BY e.created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE exports SET state = 'running', started_at = COALESCE(started_at, ?), "
                "attempts = attempts + 1 WHERE id = ?",
                (time.time(), row[0]),
            )
        return self.get(row[1], row[0]), row[2]

    def finish(self, export_id: str, state: str, error: str | None = None, record: dict[str, Any] | None = None) -> None:
        assert state in ("succeeded", "failed", "cancelled", "queued")
        self._exec(
            "UPDATE exports SET state = ?, error = ?, record = ?, finished_at = ? WHERE id = ?",
            (
                state,
                error,
                None if record is None else json.dumps(record),
                None if state == "queued" else time.time(),
                export_id,
            ),
        )


def _export(row: sqlite3.Row) -> Export:
    return Export(
        id=row["id"],
        job_id=row["job_id"],
        owner=row["owner"],
        origin=row["origin"],
        options=ExportOptions.model_validate_json(row["options"]),
        state=row["state"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        error=row["error"],
        record=json.loads(row["record"]) if row["record"] else None,
        cancel_requested=bool(row["cancel_requested"]),
    )


class ExportRunner(QueueRunner[Export]):
    """One thread: claim an export, write it (confined to the data roots), record how it ended."""

    def __init__(
        self, store: ExportStore, jobs: JobStore, roots: Sequence[Path | str] = (), teacher: str | None = None
    ) -> None:
        super().__init__("export-runner")
        self.store = store
        self.jobs = jobs
        self.confinement = list(roots)  # local roots and store prefixes, checked at each open
        self.roots = [r for r in roots if isinstance(r, Path)]  # local ones: cut from messages
        self.teacher = teacher

    def cancel(self, job_id: str, export_id: str) -> Export:
        export = self.store.request_cancel(job_id, export_id)
        self._signal_cancel(export_id)
        return export

    def queue_job_exports(self, job: Job) -> None:
        """At the job's success: the exports its request asked for (validated at submit)."""
        options = [ExportOptions.model_validate(o) for o in job.request.get("exports", [])]
        if options:
            self.store.create(job, options, "job")
            self.notify()

    def _requeue_interrupted(self) -> None:
        for export_id in self.store.requeue_interrupted():
            log.info("export %s was running when the service stopped: running it again", export_id)

    def _claim(self) -> Export | None:
        while (claimed := self.store.claim_next()) is not None:
            export, job_state = claimed
            if job_state == "succeeded":
                return export
            self.store.finish(export.id, "failed", f"JobStateError: job {export.job_id} is {job_state}")
        return None

    def _id(self, export: Export) -> str:
        return export.id

    def _cancel_requested(self, export: Export) -> bool:
        return self.store.get(export.job_id, export.id).cancel_requested

    def _run_one(self, export: Export) -> None:
        self._export(export, self.jobs.get(export.job_id))

    def _export(self, export: Export, job: Job) -> None:
        log.info("export %s (%s of job %s): starting", export.id, export.options.format, job.id)
        try:
            config = export_config_for(job.output, export.options, self.teacher)
            with confine.confined_to(self.confinement):
                record = self._finished_before(config, export) or run_export(config, self._cancel)
        except JobCancelledError as exc:
            if self._stopping.is_set():
                log.info("export %s interrupted by shutdown; it is redone at the next start", export.id)
                self.store.finish(export.id, "queued")
            else:
                log.info("export %s cancelled", export.id)
                self.store.finish(export.id, "cancelled", str(exc))
            return
        except ReweighError as exc:
            self._fail(export, f"{type(exc).__name__}: {exc}")
            return
        except OSError as exc:  # the machine's side (disk full, permissions): say which and where
            self._fail(export, describe_os_error(exc, self.roots))
            return
        except Exception as exc:  # a bug: its trace goes to the log, not the API
            log.exception("export %s failed unexpectedly", export.id)
            self._fail(export, f"internal error ({type(exc).__name__}); see the server log")
            return
        self.store.finish(export.id, "succeeded", record=record)
        log.info("export %s succeeded", export.id)

    def _fail(self, export: Export, error: str) -> None:
        log.warning("export %s failed: %s", export.id, error)
        self.store.finish(export.id, "failed", scrub(error, self.roots))

    @staticmethod
    def _finished_before(config: ExportConfig, export: Export) -> dict[str, Any] | None:
        """An interrupted export whose directory was completed before the process died: its record,
        when it was made from this manifest in this format (the rename, or on a store the upload of
        its record, is the export's last act)."""
        record_path = storage.job_path(config.out) / EXPORT_RECORD
        if export.attempts < 2 or not storage.is_file(record_path):
            return None
        with storage.open_read(record_path) as fh:
            record: dict[str, Any] = json.loads(fh.read())
        digest = load_manifest(config.manifest).fingerprint.get("digest")
        if record.get("export") == config.format and record.get("manifest", {}).get("digest") == digest:
            return record
        return None
