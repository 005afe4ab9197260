"""Prometheus metrics, one registry per app (so that several apps in one test process don't collide)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "superseded")
# Any other method (a client may send `MFOO`) counts as "other": labels must not grow with input.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, memory, open fds (Linux)
        self.requests = Counter(
            "reweigh_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "reweigh_http_request_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.batch_documents = Histogram(
            "reweigh_batch_documents",
            "documents per engine call made for HTTP requests (micro-batches)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_requests = Histogram(
            "reweigh_batch_requests",
            "HTTP requests merged into one engine call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.tokens_scored = Counter(
            "reweigh_tokens_scored", "tokens scored, by source", ["source"], registry=r
        )
        self.documents_scored = Counter(
            "reweigh_documents_scored", "documents scored, by source", ["source"], registry=r
        )
        self.engine_seconds = Histogram(
            "reweigh_engine_call_seconds", "wall time of one engine call, by source", ["source"], registry=r
        )
        self.queue_documents = Gauge(
            "reweigh_queue_documents", "documents waiting for the engine (HTTP)", registry=r
        )
        self.engine_errors = Counter("reweigh_engine_errors", "engine calls that raised", registry=r)
        self._jobs = _JobsCollector()
        r.register(self._jobs)

    def watch_jobs(self, count_by_state: Callable[[], dict[str, int]] | None) -> None:
        """Jobs by state, read from the job store at scrape time (always agrees with GET /v1/jobs)."""
        self._jobs.count_by_state = count_by_state


class _JobsCollector(Collector):
    def __init__(self) -> None:
        self.count_by_state: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("reweigh_jobs", "jobs by state", labels=["state"])
        counts = self.count_by_state() if self.count_by_state is not None else {}
        for state in JOB_STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


class MetricsMiddleware:
    """Counts and times every request by its route *template* (`/v1/jobs/{job_id}`, not the id), so
    label cardinality stays bounded; paths that match no route count as `unmatched`, and unknown
    methods as `other`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            labels = (template, method if method in KNOWN_METHODS else "other", str(status[0]))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
