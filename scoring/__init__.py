"""Text -> MiniPLM difference scores: models, batching, chunked log-probs, fingerprints, cache.

Names are imported lazily: `scoring.errors` or `scoring.types` must not pay for torch and
transformers (seconds), which only the engine needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "STATUS_BLANK": "scoring.types",
    "STATUS_EMPTY": "scoring.types",
    "STATUS_OK": "scoring.types",
    "DocScore": "scoring.types",
    "content_hash": "scoring.types",
    "EngineConfig": "scoring.config",
    "EngineStats": "scoring.engine",
    "ScoringEngine": "scoring.engine",
    "Fingerprint": "scoring.fingerprint",
    "ScoreCache": "scoring.cache",
}
__all__ = [
    "STATUS_BLANK",
    "STATUS_EMPTY",
    "STATUS_OK",
    "DocScore",
    "EngineConfig",
    "EngineStats",
    "Fingerprint",
    "ScoreCache",
    "ScoringEngine",
    "content_hash",
]

if TYPE_CHECKING:
    from scoring.cache import ScoreCache
    from scoring.config import EngineConfig
    from scoring.engine import EngineStats, ScoringEngine
    from scoring.fingerprint import Fingerprint
    from scoring.types import STATUS_BLANK, STATUS_EMPTY, STATUS_OK, DocScore, content_hash


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scoring' has no attribute {name!r}")
