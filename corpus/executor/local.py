"""Runs a step's tasks one after another in this process."""

from __future__ import annotations

import threading
from typing import Any

from corpus import confine
from corpus.executor.base import (
    Executor,
    Result,
    Step,
    StepContext,
    StepProgress,
    StepProgressFn,
    finished_result,
    progress_of,
    run_task,
)
from corpus.storage import JobPath
from scoring.protocols import BuiltScorer, Scorer, ScorerSpec


class LocalExecutor(Executor):
    """Scorers are built on first use and kept for the executor's life (one model load per job)."""

    def __init__(self) -> None:
        self._scorers: dict[ScorerSpec, Scorer] = {}

    def scorer(self, spec: ScorerSpec) -> Scorer:
        if spec not in self._scorers:
            self._scorers[spec] = spec.build()
        return self._scorers[spec]

    def fingerprint(self, spec: ScorerSpec) -> dict[str, Any]:
        return self.scorer(spec).fingerprint.as_dict()

    def run(
        self,
        out: JobPath,
        step: Step,
        *,
        progress: StepProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Result]:
        emit = progress or (lambda _p: None)
        spec = step.scorer
        ctx = StepContext(
            scorer=(lambda: self.scorer(spec)) if spec is not None else None,
            progress=lambda documents, tokens: emit(StepProgress(documents, tokens)),
            cancel=cancel,
            roots=confine.active_roots(),
        )
        results = []
        for rank in range(step.tasks):
            ctx.check_cancel(f"before {step.name} task {rank}")
            done = finished_result(out, step, rank)
            if done is not None:
                emit(progress_of(done))
                results.append(done)
                continue
            results.append(run_task(out, step, rank, ctx))
            emit(StepProgress(tasks_done=1))
        return results

    def close(self) -> None:
        for spec, scorer in self._scorers.items():
            close = getattr(scorer, "close", None) if not isinstance(spec, BuiltScorer) else None
            if close is not None:
                close()
        self._scorers.clear()
