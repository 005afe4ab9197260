"""One worker thread owns the engine; HTTP requests are micro-batched, jobs take turns.

Why one thread: the engine runs one batch at a time anyway, and a single owner means the event loop
never blocks on a forward pass and no two callers race for the models.

HTTP side: each request's documents are queued; the worker waits up to `batch_wait_ms` after the
oldest queued request for more to arrive (or until `batch_max_documents`), then scores all of them in
one `engine.score` call and hands each request its slice. Concurrent small requests thus share the
engine's length bucketing and padding budget the way one bulk call would. The queue is bounded in
documents: a request that does not fit is refused at once (OverloadedError -> 429), never parked.

Job side: a job's engine calls (one per chunk) go through `JobEngine`, which hands them to the same
worker. HTTP batches go first, but after `batches_per_job_chunk` of them while a job chunk waits,
the chunk runs: interactive latency stays low and a job under constant HTTP load still progresses.

Bounded work: the engine is called on slices of at most `slice_chars` characters (a document is
never cut). A request that timed out or whose client went away is taken out of the queue at once
(its documents no longer count against the queue's limit), and between two slices the worker drops
what is left of it; a job's chunk is cut into slices too, and waiting HTTP batches run between
them. So after a timeout the engine is free again within about one slice, not when all the
abandoned work would have finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scoring.errors import (
    EngineDeadError,
    EngineNotReadyError,
    OverloadedError,
    RequestTimeoutError,
    ReweighError,
)
from scoring.protocols import ProgressFn, Scorer
from scoring.types import DocScore
from service.metrics import Metrics

log = logging.getLogger(__name__)

# Consecutive failing engine calls after which the engine counts as dead (readyz goes 503).
DEAD_AFTER_FAILURES = 3
T = TypeVar("T")


class ClientDisconnectedError(ReweighError):
    """The client closed the connection before its answer was ready (nobody reads the response)."""


@dataclass
class _Request:
    texts: Sequence[str]
    future: concurrent.futures.Future[list[DocScore]]
    arrived: float = field(default_factory=time.monotonic)
    # Set (under the worker's lock) when the caller gave up: the worker stops scoring it.
    abandoned: bool = False
    results: list[DocScore] = field(default_factory=list)


@dataclass
class _JobCall:
    texts: Sequence[str]
    progress: ProgressFn | None
    future: concurrent.futures.Future[list[DocScore]]


class EngineWorker:
    def __init__(
        self,
        engine: Scorer,
        metrics: Metrics,
        *,
        wait_s: float,
        max_batch_documents: int,
        max_queued_documents: int,
        batches_per_job_chunk: int,
        slice_chars: int = 65_536,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.wait_s = wait_s
        self.max_batch_documents = max_batch_documents
        self.max_queued_documents = max_queued_documents
        self.batches_per_job_chunk = batches_per_job_chunk
        self.slice_chars = slice_chars
        self._cond = threading.Condition()
        self._requests: deque[_Request] = deque()
        self._queued_documents = 0
        self._job_calls: deque[_JobCall] = deque()
        self._batches_since_job = 0
        self._failures = 0
        self._dead: str | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine-worker", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the call in progress, refuse the rest, and join the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._dead is None and not self._stopping

    @property
    def dead_reason(self) -> str | None:
        return self._dead

    @property
    def queued_documents(self) -> int:
        return self._queued_documents

    # --- HTTP side -------------------------------------------------------------------------------

    def submit(self, texts: Sequence[str]) -> _Request:
        """Queue one request's documents; refuse at once when the queue cannot take them."""
        future: concurrent.futures.Future[list[DocScore]] = concurrent.futures.Future()
        request = _Request(texts, future)
        with self._cond:
            self._check_usable()
            if self._queued_documents + len(texts) > self.max_queued_documents:
                raise OverloadedError(
                    f"the scoring queue holds {self._queued_documents} documents (limit "
                    f"{self.max_queued_documents}); retry later"
                )
            self._requests.append(request)
            self._queued_documents += len(texts)
            self.metrics.queue_documents.set(self._queued_documents)
            self._cond.notify_all()
        return request

    async def score(
        self,
        texts: Sequence[str],
        timeout_s: float,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[DocScore]:
        """The request's scores; RequestTimeoutError after `timeout_s`. `disconnected`, when given, is
        polled: a client that went away abandons its work (ClientDisconnectedError)."""
        request = self.submit(texts)
        answer = asyncio.ensure_future(asyncio.wrap_future(request.future))
        watcher = asyncio.ensure_future(_watch(disconnected)) if disconnected is not None else None
        waiting: list[asyncio.Future[Any]] = [answer] if watcher is None else [answer, watcher]
        try:
            done, _ = await asyncio.wait(
                waiting,
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if answer in done:
                return answer.result()
            self.abandon(request)
            if watcher is not None and watcher in done:
                raise ClientDisconnectedError("the client disconnected; its queued work was dropped")
            raise RequestTimeoutError(f"no answer within {timeout_s:g}s (the engine is busy); retry later")
        finally:
            if watcher is not None:
                watcher.cancel()
            if not answer.done():
                answer.cancel()  # already abandoned above: only the asyncio side is left to clean

    def abandon(self, request: _Request) -> None:
        """The caller gave up: take the request out of the queue now, or stop it at the next slice."""
        with self._cond:
            request.abandoned = True
            if request in self._requests:
                self._requests.remove(request)
                self._queued_documents -= len(request.texts)
                self.metrics.queue_documents.set(self._queued_documents)
            request.future.cancel()

    # --- job side --------------------------------------------------------------------------------

    def score_for_job(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]:
        """Blocking: called from the job runner thread; returns when the worker has scored the chunk.

        The chunk goes to the engine slice by slice, each one queued anew: HTTP batches that
        arrive meanwhile run between slices instead of waiting for the whole chunk."""
        results: list[DocScore] = []
        for piece in slices(texts, self.slice_chars):
            future: concurrent.futures.Future[list[DocScore]] = concurrent.futures.Future()
            with self._cond:
                self._check_usable()
                self._job_calls.append(_JobCall(piece, progress, future))
                self._cond.notify_all()
            results.extend(future.result())
        return results

    def _check_usable(self) -> None:
        if self._stopping:
            raise EngineNotReadyError("the service is shutting down")
        if self._dead is not None:
            raise EngineDeadError(f"the scoring engine failed and is out of service: {self._dead}")

    # --- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            work = self._next_work()
            if work is None:
                return
            if isinstance(work, _JobCall):
                self._run_job_call(work)
            else:
                self._run_batch(work)

    def _next_work(self) -> list[_Request] | _JobCall | None:
        with self._cond:
            while True:
                if self._stopping:
                    self._fail_all(EngineNotReadyError("the service is shutting down"))
                    return None
                job_due = self._job_calls and (
                    not self._requests or self._batches_since_job >= self.batches_per_job_chunk
                )
                if job_due:
                    self._batches_since_job = 0
                    return self._job_calls.popleft()
                if self._requests:
                    # The window runs from the oldest request's arrival: no request waits longer
                    # than wait_s for company, however requests trickle in.
                    deadline = self._requests[0].arrived + self.wait_s
                    while (
                        self._queued_documents < self.max_batch_documents
                        and not self._stopping
                        and (left := deadline - time.monotonic()) > 0
                    ):
                        self._cond.wait(left)
                    if self._stopping:
                        continue
                    self._batches_since_job += 1
                    return self._take_batch()
                self._cond.wait()

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._requests:
            nxt = self._requests[0]
            if batch and size + len(nxt.texts) > self.max_batch_documents:
                break
            self._requests.popleft()
            self._queued_documents -= len(nxt.texts)
            # A request whose caller gave up (timeout, disconnect) is dropped here, unscored.
            if nxt.future.set_running_or_notify_cancel():
                batch.append(nxt)
                size += len(nxt.texts)
        self.metrics.queue_documents.set(self._queued_documents)
        return batch

    def _fail_all(self, exc: Exception) -> None:
        for request in self._requests:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(exc)
        self._requests.clear()
        self._queued_documents = 0
        for call in self._job_calls:
            call.future.set_exception(exc)
        self._job_calls.clear()

    def _run_batch(self, batch: list[_Request]) -> None:
        if not batch:
            return
        self.metrics.batch_documents.observe(sum(len(r.texts) for r in batch))
        self.metrics.batch_requests.observe(len(batch))
        # (request, index of one of its texts), in request order: a slice may span requests.
        pending = [(r, i) for r in batch for i in range(len(r.texts))]
        for piece in slices(pending, self.slice_chars, lambda item: len(item[0].texts[item[1]])):
            with self._cond:
                if self._stopping:
                    exc: Exception = EngineNotReadyError("the service is shutting down")
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    return
                live = [(r, i) for r, i in piece if not r.abandoned]
            if not live:
                continue  # every document of this slice belongs to a request that gave up
            try:
                results = self._call_engine([r.texts[i] for r, i in live], None, "http")
            except Exception as exc:
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                return
            for (r, _), result in zip(live, results, strict=True):
                r.results.append(result)
                if len(r.results) == len(r.texts) and not r.future.done():
                    r.future.set_result(r.results)
        for r in batch:  # abandoned mid-way: nobody waits for them, but leave no future running
            if not r.future.done():
                r.future.set_exception(RequestTimeoutError("abandoned by its caller"))

    def _run_job_call(self, call: _JobCall) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(self._call_engine(call.texts, call.progress, "job"))
        except Exception as exc:
            call.future.set_exception(exc)

    def _call_engine(self, texts: Sequence[str], progress: ProgressFn | None, source: str) -> list[DocScore]:
        started = time.perf_counter()
        try:
            results = self.engine.score(texts, progress)
        except Exception as exc:
            self.metrics.engine_errors.inc()
            self._failures += 1
            if self._failures >= DEAD_AFTER_FAILURES:
                self._dead = f"{type(exc).__name__} in {self._failures} engine calls in a row"
                log.error("engine out of service: %s", self._dead)
                with self._cond:
                    self._fail_all(EngineDeadError(f"the scoring engine failed: {self._dead}"))
            raise
        self._failures = 0
        self.metrics.engine_seconds.labels(source).observe(time.perf_counter() - started)
        self.metrics.documents_scored.labels(source).inc(len(texts))
        self.metrics.tokens_scored.labels(source).inc(sum(r.n_tokens for r in results if r.ok))
        return results


def slices(items: Sequence[T], max_chars: int, size: Callable[[T], int] = len) -> Iterator[list[T]]:  # type: ignore[assignment]
    """Consecutive runs of `items` of at most `max_chars` in total (an item longer than that alone)."""
    piece: list[T] = []
    chars = 0
    for item in items:
        n = size(item)
        if piece and chars + n > max_chars:
            yield piece
            piece, chars = [], 0
        piece.append(item)
        chars += n
    if piece:
        yield piece


async def _watch(disconnected: Callable[[], Awaitable[bool]], every_s: float = 0.1) -> None:
    """Returns once `disconnected()` says the client went away."""
    while not await disconnected():
        await asyncio.sleep(every_s)


class JobEngine:
    """The engine as a job sees it: same fingerprint, but every call queues behind the worker."""

    def __init__(self, worker: EngineWorker) -> None:
        self._worker = worker

    @property
    def fingerprint(self) -> Any:
        return self._worker.engine.fingerprint

    @property
    def stats(self) -> Any:
        return getattr(self._worker.engine, "stats", None)

    def score(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]:
        return self._worker.score_for_job(texts, progress)
