"""One step signature and one task runner, whichever executor runs them.

A *step* is a unit of a job split into `tasks` independent tasks: `run(rank, ctx)` does task `rank`
and returns a small JSON result (counts, hashes, plans: never documents). An *executor* decides
where the tasks run and owns their completion markers: `steps/<step>/<rank>.json` holds a finished
task's result, written atomically by the worker that ran it, right after it ran. A rerun of the job
reads the markers instead of redoing the tasks, so a job killed anywhere (worker or driver)
resumes, and since every step is deterministic it ends with the bytes of an uninterrupted run.

`run_task` is that logic, and the only place that touches markers: the local executor calls it in
this process, the Ray executor on workers. Ray is transport; the steps never know where they run.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from corpus import confine, storage
from corpus.storage import JobPath
from scoring.errors import JobCancelledError
from scoring.protocols import ProgressFn, Scorer, ScorerSpec

STEPS_DIR = "steps"

Result = dict[str, Any]


@dataclass(frozen=True)
class StepProgress:
    """Documents and tokens a step got through, and tasks it finished, since the last report."""

    documents: int = 0
    tokens: int = 0
    tasks_done: int = 0


StepProgressFn = Callable[[StepProgress], None]


class StepContext:
    """What a running task may use: the step's scorer (built once per worker), progress, cancel.

    `roots` is the confinement (corpus/confine.py) active where the step was handed out, entered
    again around the task wherever it runs: a ContextVar does not travel to a Ray worker."""

    def __init__(
        self,
        scorer: Callable[[], Scorer] | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        roots: tuple[Path | str, ...] | None = None,
    ) -> None:
        self._scorer = scorer
        self._progress = progress
        self._cancel = cancel
        self.roots = roots

    def scorer(self) -> Scorer:
        if self._scorer is None:
            raise RuntimeError("this step declared no scorer")
        return self._scorer()

    def progress(self, documents: int, tokens: int) -> None:
        if self._progress is not None:
            self._progress(documents, tokens)

    def check_cancel(self, where: str) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise JobCancelledError(f"cancelled {where}")


class Step(Protocol):
    """`name` names its marker folder; `scorer`, when set, is built on the workers that run it.

    A result may carry "documents" and "tokens": the executor reports them as progress when the
    task's work is not streamed (a task run elsewhere, or one already done)."""

    @property
    def name(self) -> str: ...

    @property
    def tasks(self) -> int: ...

    @property
    def scorer(self) -> ScorerSpec | None: ...

    def run(self, rank: int, ctx: StepContext) -> Result: ...

    def reusable(self, result: Result) -> bool:
        """False when a finished task must run again (e.g. an input skipped under on_error=skip,
        now run with on_error=fail)."""
        ...


def marker_path(out: JobPath, step: Step, rank: int) -> JobPath:
    return out / STEPS_DIR / step.name / f"{rank:05d}.json"


def finished_result(out: JobPath, step: Step, rank: int) -> Result | None:
    path = marker_path(out, step, rank)
    if not storage.is_file(path):
        return None
    result: Result = storage.read_json(path)
    return result if step.reusable(result) else None


def run_task(out: JobPath, step: Step, rank: int, ctx: StepContext) -> Result:
    """Task `rank` of `step`: its recorded result, or run it and record the result (after
    everything the task wrote: on an object store too, a marker never precedes its files), every
    file it opens confined to `ctx.roots`, as in the process that handed it out."""
    with confine.carried(ctx.roots):
        done = finished_result(out, step, rank)
        if done is not None:
            return done
        result = step.run(rank, ctx)
        storage.write_json(marker_path(out, step, rank), result)
        return result


def progress_of(result: Result) -> StepProgress:
    return StepProgress(int(result.get("documents", 0)), int(result.get("tokens", 0)), 1)


class Executor(ABC):
    """Runs every task of a step and returns their results in rank order."""

    @abstractmethod
    def run(
        self,
        out: JobPath,
        step: Step,
        *,
        progress: StepProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Result]: ...

    @abstractmethod
    def fingerprint(self, spec: ScorerSpec) -> dict[str, Any]:
        """The fingerprint of the scorer `spec` builds, as the workers will build it."""

    @abstractmethod
    def close(self) -> None:
        """Releases what the executor holds (loaded scorers, a Ray it started)."""
