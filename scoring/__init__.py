"""Text -> MiniPLM difference scores: models, batching, chunked log-probs, fingerprints, cache."""

from scoring.cache import ScoreCache
from scoring.config import EngineConfig
from scoring.engine import EngineStats, ScoringEngine
from scoring.fingerprint import Fingerprint
from scoring.types import STATUS_BLANK, STATUS_EMPTY, STATUS_OK, DocScore, content_hash

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
