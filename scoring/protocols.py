"""What the corpus jobs and the service need of a scorer, declared once.

A scorer is anything that turns texts into `DocScore`s and says what produced them: the model-pair
`ScoringEngine`, a proxy, a cascade, or a fake in tests. A distributed job cannot ship a loaded
scorer to its workers, so it ships a `ScorerSpec` (small, picklable) that each worker builds once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from scoring.types import DocScore

# (documents, tokens) scored since the last call.
ProgressFn = Callable[[int, int], None]


class FingerprintLike(Protocol):
    """Everything that decides a scorer's numbers (scoring.fingerprint.Fingerprint is one)."""

    @property
    def digest(self) -> str: ...

    def as_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Scorer(Protocol):
    @property
    def fingerprint(self) -> FingerprintLike: ...

    def score(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]: ...


class ScorerSpec(Protocol):
    """How to build a scorer where it runs. Must pickle; `build` may load models (seconds)."""

    def build(self) -> Scorer: ...


class BuiltScorer:
    """The spec of a scorer already built in this process (e.g. the service's queued engine), for
    the local executor: it is not shipped anywhere, and whoever built it closes it."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def build(self) -> Scorer:
        return self.scorer
