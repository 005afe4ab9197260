"""Plain result types shared by the scoring engine, the corpus jobs and the service."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Version of the score definition (see README, "What a score is"). Bump it whenever the numbers a
# given model pair produces for a given text could change: it is part of every fingerprint.
SCORE_DEFINITION_VERSION = "1"

STATUS_OK = "ok"
# A text whose tokenization is empty (e.g. "" or, for some tokenizers, whitespace only).
STATUS_EMPTY = "empty: text has no tokens"
# Whitespace-only text: byte-level tokenizers do give it tokens, but it is not a document, and a
# score for it would only be the models' opinion of runs of spaces.
STATUS_BLANK = "blank: text is whitespace only"


@dataclass(frozen=True, slots=True)
class DocScore:
    """One document's result. Log-probs are per-token means in nats; `score` = teacher - reference.

    When `status` is not "ok" the three floats are None (never NaN) and the status says why.
    """

    n_tokens: int
    teacher_logprob: float | None
    reference_logprob: float | None
    score: float | None
    status: str

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @classmethod
    def not_scored(cls, reason: str, n_tokens: int = 0) -> DocScore:
        return cls(n_tokens=n_tokens, teacher_logprob=None, reference_logprob=None, score=None, status=reason)

    @classmethod
    def from_logprobs(cls, n_tokens: int, teacher_logprob: float, reference_logprob: float) -> DocScore:
        return cls(
            n_tokens=n_tokens,
            teacher_logprob=float(teacher_logprob),
            reference_logprob=float(reference_logprob),
            score=float(teacher_logprob) - float(reference_logprob),
            status=STATUS_OK,
        )

    def as_row(self) -> dict[str, object]:
        return {
            "n_tokens": self.n_tokens,
            "teacher_logprob": self.teacher_logprob,
            "reference_logprob": self.reference_logprob,
            "score": self.score,
            "status": self.status,
        }


def content_hash(text: str) -> str:
    """Hex sha256 of the UTF-8 text: the cache key and the sampler's duplicate key."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
