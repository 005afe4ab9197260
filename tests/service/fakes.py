"""A fake engine for service tests: deterministic hash-based scores, optionally slow, records calls."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scoring.types import STATUS_BLANK, STATUS_EMPTY, DocScore


@dataclass
class FakeFingerprint:
    digest: str = "f" * 64

    def as_dict(self) -> dict[str, Any]:
        return {"engine": "fake", "digest": self.digest}


@dataclass
class FakeEngine:
    delay_s: float = 0.0  # per call: makes batching and queueing observable
    delay_s_per_char: float = 0.0  # per character scored: work that grows with the input, as a model's
    fail: Exception | None = None
    fingerprint: FakeFingerprint = field(default_factory=FakeFingerprint)
    calls: list[int] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def score(
        self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> list[DocScore]:
        self.threads.add(threading.current_thread().name)
        with self._lock:
            self.calls.append(len(texts))
            if self.fail is not None:
                raise self.fail
            if self.delay_s or self.delay_s_per_char:
                time.sleep(self.delay_s + self.delay_s_per_char * sum(len(t) for t in texts))
            out = [fake_score(t) for t in texts]
        if progress is not None:
            progress(len(texts), sum(s.n_tokens for s in out))
        return out

    def close(self) -> None:
        self.closed = True


def fake_score(text: str) -> DocScore:
    if not text:
        return DocScore.not_scored(STATUS_EMPTY)
    n = len(text.split())
    if n == 0:
        return DocScore.not_scored(STATUS_BLANK)
    h = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return DocScore.from_logprobs(n, -1.0 - h[0] / 64.0, -1.0 - h[1] / 64.0)
