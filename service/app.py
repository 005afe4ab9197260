"""The app factory. Nothing heavy happens at import: models load in the lifespan.

app = create_app(load_settings())                    # real models, from settings
app = create_app(settings, engine_factory=fake)      # tests
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from scoring.errors import ConfigError
from scoring.protocols import Scorer
from service.auth import require_api_key
from service.batcher import EngineWorker, JobEngine
from service.deps import Runtime
from service.errors import install_error_handlers
from service.exports import ExportRunner, ExportStore
from service.jobs import JobRunner, JobStore, job_executor
from service.limits import BodyLimitMiddleware, JsonBodyMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.paths import DataRoots
from service.routes import diagnostics, exports, health, jobs, manifests, scores, ui
from service.settings import Settings

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Scorer]


def load_engine(settings: Settings) -> Scorer:
    """The real pair, from the settings' model paths."""
    if not settings.teacher or not settings.reference:
        raise ConfigError(
            "teacher and reference model paths are required (REWEIGH_TEACHER, REWEIGH_REFERENCE)"
        )
    from transformers.utils import logging as hf_logging

    from scoring import ScoringEngine

    hf_logging.disable_progress_bar()
    return ScoringEngine.from_pretrained(
        settings.teacher, settings.reference, settings.engine_config(), cache=settings.score_cache
    )


def create_app(settings: Settings, engine_factory: EngineFactory = load_engine) -> FastAPI:
    executor = job_executor(settings)  # refuse an unusable executor before loading models
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Off the event loop: loading can take minutes, and /healthz should not stall meanwhile.
        engine = await asyncio.to_thread(engine_factory, settings)
        if settings.proxy is not None:
            from scoring.proxy import ProxyScorer

            app.state.proxy = await asyncio.to_thread(ProxyScorer.load, settings.proxy)
        worker = EngineWorker(
            engine,
            metrics,
            wait_s=settings.batch_wait_ms / 1000,
            max_batch_documents=settings.batch_max_documents,
            max_queued_documents=settings.max_queued_documents,
            batches_per_job_chunk=settings.batches_per_job_chunk,
            slice_chars=settings.engine_slice_chars,
        )
        store = JobStore(settings.jobs_db)
        metrics.watch_jobs(store.count_by_state)
        roots = DataRoots(settings.data_roots)
        exports = ExportStore(settings.jobs_db)
        export_runner = ExportRunner(exports, store, roots.confinement, settings.teacher)
        runner = JobRunner(
            store, JobEngine(worker), executor, roots.confinement, on_success=export_runner.queue_job_exports
        )
        worker.start()
        runner.start()
        export_runner.start()
        app.state.runtime = Runtime(engine, worker, store, runner, roots, exports, export_runner)
        log.info(
            "ready: fingerprint %s, data roots %s, %d api keys",
            engine.fingerprint.digest[:12],
            [str(r) for r in settings.data_roots],
            len(settings.api_keys),
        )
        try:
            yield
        finally:
            app.state.runtime = None
            app.state.proxy = None
            metrics.watch_jobs(None)
            # The job first (it stops at its next chunk and stays resumable), then the engine.
            await asyncio.to_thread(runner.stop)
            await asyncio.to_thread(export_runner.stop)
            await asyncio.to_thread(worker.stop)
            store.close()
            exports.close()
            close = getattr(engine, "close", None)
            if close is not None:
                close()

    # Production keeps the API's description behind a key (REWEIGH_PUBLIC_DOCS overrides): it has
    # no /docs or /redoc (a browser would not send the key), and /openapi.json needs the key.
    public_docs = settings.docs_are_public
    app = FastAPI(
        title="reweigh",
        summary="MiniPLM difference scores, corpus rewrite jobs and their manifests",
        version=_version(),
        lifespan=lifespan,
        openapi_url="/openapi.json" if public_docs else None,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
    )
    if not public_docs:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_api_key)])
        def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = None
    app.state.proxy = None
    install_error_handlers(app)

    # Every /v1 route needs a key (when keys are configured); probes and metrics do not.
    for router in (scores.build_router(settings), jobs.router, manifests.router, exports.router, diagnostics.router):
        app.include_router(router, dependencies=[Depends(require_api_key)])
    app.include_router(health.router)
    # The dashboard: its routes check the same keys (a bearer header, or the cookie its login sets).
    app.include_router(ui.login_router)
    app.include_router(ui.router)

    # Outermost last: metrics see every answer, the body limit's 413 included.
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("reweigh")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
