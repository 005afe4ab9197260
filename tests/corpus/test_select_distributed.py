"""Distributed selection equals the in-memory oracle (corpus.sampler.select), decision for decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corpus.config import SelectionConfig
from corpus.sampler import select
from corpus.select_distributed import ChunkArrays, DistributedSelection, order_key
from scoring.errors import ConfigError


def synthetic_chunks(chunks: int, rows: int, seed: int) -> list[ChunkArrays]:
    """Coarse scores (many ties), some not ok, NaNs, a teacher spread, and duplicated hashes."""
    rng = np.random.default_rng(seed)
    out = []
    pool = rng.integers(0, 256, size=(rows * chunks, 16), dtype=np.uint8)  # hashes drawn with repeats
    for _ in range(chunks):
        score = np.round(rng.normal(0, 1, rows), 1)  # zeros of both signs among the ties
        score[rng.random(rows) < 0.02] = np.nan
        hashes = pool[rng.integers(0, len(pool), rows)]
        out.append(
            ChunkArrays(
                score=score,
                teacher_logprob=rng.normal(-3, 1, rows),
                n_tokens=rng.integers(1, 500, rows),
                ok=rng.random(rows) > 0.05,
                content_hash=np.frombuffer(hashes.tobytes(), dtype="S16"),
            )
        )
    return out


CONFIGS = [
    SelectionConfig(),
    SelectionConfig(ratio=0.3, min_teacher_logprob=-3.5),
    SelectionConfig(ratio=1.0),
    SelectionConfig(keep_tokens=20_000),
    SelectionConfig(ratio=0.7, drop_duplicates=False),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.model_dump(exclude_defaults=True)))
@pytest.mark.parametrize("bracket_limit", [1 << 20, 3])  # one pass; every radix level
def test_matches_the_oracle(tmp_path: Path, config: SelectionConfig, bracket_limit: int) -> None:
    chunks = synthetic_chunks(5, 300, seed=1)
    joined = {name: np.concatenate([getattr(c, name) for c in chunks]) for name in ChunkArrays.__dataclass_fields__}
    oracle = select(config, **joined)
    got: dict[int, object] = {}
    dist = DistributedSelection(config, chunks.__getitem__, len(chunks), tmp_path / "work", bracket_limit=bracket_limit)
    result = dist.run(lambda i, sel: got.__setitem__(i, sel))
    assert np.array_equal(np.concatenate([got[i].repeats for i in range(5)]), oracle.repeats)  # type: ignore[attr-defined]
    assert np.array_equal(np.concatenate([got[i].reason for i in range(5)]), oracle.reason)  # type: ignore[attr-defined]
    assert result.threshold == oracle.threshold
    assert str(result.threshold) == str(oracle.threshold)  # -0.0 and 0.0 tie in rank, not in the report
    assert result.dropped == oracle.dropped
    assert result.bracket <= bracket_limit or result.passes == 4  # ranked exactly: a bin or exact ties


def test_exact_ties_take_every_radix_level_then_break_by_hash(tmp_path: Path) -> None:
    chunks = [ChunkArrays(**{**c.__dict__, "score": np.full(len(c.score), 0.5)}) for c in synthetic_chunks(3, 100, seed=3)]
    joined = {name: np.concatenate([getattr(c, name) for c in chunks]) for name in ChunkArrays.__dataclass_fields__}
    oracle = select(SelectionConfig(ratio=0.4), **joined)
    got: list[np.ndarray] = []
    dist = DistributedSelection(SelectionConfig(ratio=0.4), chunks.__getitem__, 3, tmp_path, bracket_limit=10)
    result = dist.run(lambda i, sel: got.append(sel.repeats))
    assert result.passes == 4 and result.bracket > 10
    assert np.array_equal(np.concatenate(got), oracle.repeats)


def test_order_key_sorts_best_first() -> None:
    scores = np.array([-np.inf, -2.5, -0.0, 0.0, 1e-300, 3.0, np.inf])
    assert list(np.argsort(order_key(scores), kind="stable")) == [6, 5, 4, 2, 3, 1, 0]


def test_budget_over_the_corpus_and_soft_are_refused(tmp_path: Path) -> None:
    chunks = synthetic_chunks(2, 50, seed=2)
    with pytest.raises(ConfigError, match="keep_tokens=100000000 exceeds"):
        DistributedSelection(SelectionConfig(keep_tokens=10**8), chunks.__getitem__, 2, tmp_path).run(lambda *_: None)
    with pytest.raises(ConfigError, match="in memory"):
        DistributedSelection(SelectionConfig(method="soft"), chunks.__getitem__, 2, tmp_path)
