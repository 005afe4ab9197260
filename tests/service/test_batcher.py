"""Micro-batching, queue bounds, timeouts and job fairness of the engine worker (fake engine)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from scoring.errors import OverloadedError, RequestTimeoutError
from service.batcher import EngineWorker, JobEngine
from service.metrics import Metrics
from tests.service.conftest import AUTH
from tests.service.fakes import FakeEngine, fake_score


@pytest.fixture
def make_worker() -> Iterator[Callable[..., EngineWorker]]:
    workers: list[EngineWorker] = []

    def make(engine: FakeEngine, **kw: float) -> EngineWorker:
        options = {
            "wait_s": 0.05,
            "max_batch_documents": 64,
            "max_queued_documents": 256,
            "batches_per_job_chunk": 2,
        }
        options.update(kw)
        w = EngineWorker(engine, Metrics(), **options)  # type: ignore[arg-type]
        w.start()
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()


def test_concurrent_requests_share_engine_calls(make_worker: Callable[..., EngineWorker]) -> None:
    engine = FakeEngine()
    worker = make_worker(engine)
    texts = [[f"request {r} doc {d}" for d in range(3)] for r in range(10)]

    async def main() -> list[list[object]]:
        return await asyncio.gather(*(worker.score(t, 5.0) for t in texts))

    results = asyncio.run(main())
    assert results == [[fake_score(t) for t in ts] for ts in texts]  # each gets its own slice, in order
    assert sum(engine.calls) == 30
    assert len(engine.calls) <= 3  # gathered within the wait window, not one call per request
    assert engine.threads == {"engine-worker"}  # never on the event loop's thread


def test_batches_respect_the_document_cap(make_worker: Callable[..., EngineWorker]) -> None:
    engine = FakeEngine()
    worker = make_worker(engine, max_batch_documents=8)

    async def main() -> None:
        await asyncio.gather(*(worker.score([f"{r} a", f"{r} b", f"{r} c"], 5.0) for r in range(6)))

    asyncio.run(main())
    assert max(engine.calls) <= 8 and sum(engine.calls) == 18


def test_full_queue_refuses_at_once(make_worker: Callable[..., EngineWorker]) -> None:
    engine = FakeEngine(delay_s=0.3)
    worker = make_worker(engine, max_queued_documents=4, wait_s=0.0)

    async def main() -> None:
        first = asyncio.ensure_future(worker.score(["busy"], 5.0))  # occupies the engine
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(worker.score(["a", "b", "c", "d"], 5.0))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await worker.score(["one more"], 5.0)
        await asyncio.gather(first, queued)

    asyncio.run(main())


def test_timeout_drops_work_not_yet_started(make_worker: Callable[..., EngineWorker]) -> None:
    engine = FakeEngine(delay_s=0.3)
    worker = make_worker(engine, wait_s=0.0)

    async def main() -> None:
        busy = asyncio.ensure_future(worker.score(["busy"], 5.0))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeoutError):
            await worker.score(["late"], 0.05)
        await busy
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert engine.calls == [1]  # the timed-out request was never scored
    assert worker.queued_documents == 0


def test_job_chunks_progress_under_constant_http_load(make_worker: Callable[..., EngineWorker]) -> None:
    engine = FakeEngine(delay_s=0.01)
    worker = make_worker(engine, wait_s=0.0, batches_per_job_chunk=2)
    job = JobEngine(worker)
    done = threading.Event()
    chunks: list[int] = []

    def run_job() -> None:
        for i in range(3):
            job.score([f"job chunk {i}"] * 5)
            chunks.append(i)
        done.set()

    async def flood() -> None:
        t = threading.Thread(target=run_job)
        t.start()
        deadline = time.monotonic() + 5
        while not done.is_set() and time.monotonic() < deadline:
            await asyncio.gather(*(worker.score([f"http {k}"], 5.0) for k in range(4)))
        t.join()

    asyncio.run(flood())
    assert chunks == [0, 1, 2]


def test_429_carries_retry_after(make_client: Callable[..., TestClient], engine: FakeEngine) -> None:
    engine.delay_s = 0.5
    client = make_client(
        max_queued_documents=2, max_documents_per_request=2, batch_wait_ms=0, retry_after_s=3
    )
    statuses: list[int] = []
    headers: list[str | None] = []

    def post() -> None:
        r = client.post(
            "/v1/scores", json={"documents": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]}, headers=AUTH
        )
        statuses.append(r.status_code)
        headers.append(r.headers.get("retry-after"))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert 200 in statuses and 429 in statuses
    assert all(h == "3" for s, h in zip(statuses, headers, strict=True) if s == 429)
