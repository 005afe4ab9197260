"""Probes and metrics: outside /v1 and unauthenticated, for orchestrators and Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import MetricsDep, Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="the process is alive")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="models are loaded and the engine is in service",
    responses={503: {"description": "not ready: loading, shutting down, or the engine failed"}},
)
def readyz(request: Request) -> JSONResponse:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return JSONResponse({"status": "not ready", "reason": "models are not loaded"}, status_code=503)
    if not runtime.worker.alive:
        reason = runtime.worker.dead_reason or "the engine worker is not running"
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    body: dict[str, Any] = {"status": "ready", "fingerprint": runtime.engine.fingerprint.digest}
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
