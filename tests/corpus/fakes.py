"""A deterministic stand-in for ScoringEngine: hash-based scores, no model, microseconds per document."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scoring.types import STATUS_BLANK, STATUS_EMPTY, DocScore


@dataclass
class FakeFingerprint:
    name: str = "fake"

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.name}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict()).encode()).hexdigest()


@dataclass
class FakeStats:
    documents: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    forward_seconds: float = 0.0

    @property
    def padding_fraction(self) -> float:
        return 0.0


class FakeEngine:
    """n_tokens = words; log-probs from the text's hash, so equal texts get equal scores."""

    def __init__(self, name: str = "fake") -> None:
        self.fingerprint = FakeFingerprint(name)
        self.stats = FakeStats()
        self.calls: list[int] = []

    def score(
        self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> list[DocScore]:
        self.calls.append(len(texts))
        out = []
        for text in texts:
            n = len(text.split())
            if not text:
                out.append(DocScore.not_scored(STATUS_EMPTY))
            elif n == 0:
                out.append(DocScore.not_scored(STATUS_BLANK))
            else:
                h = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
                teacher = -1.0 - h[0] / 64.0
                reference = -1.0 - h[1] / 64.0
                out.append(DocScore.from_logprobs(n, teacher, reference))
            self.stats.documents += 1
            self.stats.tokens += n
        if progress is not None:
            progress(len(texts), sum(len(t.split()) for t in texts))
        return out


@dataclass(frozen=True)
class FakeSpec:
    """Builds a FakeEngine where the job runs (picklable, for the Ray executor too)."""

    name: str = "fake"

    def build(self) -> FakeEngine:
        return FakeEngine(self.name)
