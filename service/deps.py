"""Dependencies routes use to reach what the lifespan built (kept on `app.state`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from scoring.errors import EngineNotReadyError
from scoring.protocols import Scorer
from service.batcher import EngineWorker
from service.exports import ExportRunner, ExportStore
from service.jobs import JobRunner, JobStore
from service.metrics import Metrics
from service.paths import DataRoots


@dataclass
class Runtime:
    """Everything the lifespan starts; None before startup and after shutdown."""

    engine: Scorer
    worker: EngineWorker
    store: JobStore
    runner: JobRunner
    roots: DataRoots
    exports: ExportStore
    export_runner: ExportRunner


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise EngineNotReadyError("the models are not loaded")
    return runtime


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
