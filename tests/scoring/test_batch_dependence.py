"""How far a document's score moves with its batch-mates, in the test dtype (REWEIGH_TEST_DTYPE), and
that `batch_invariant` removes the dependence: the same bits alone, together or in another order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scoring import DocScore, EngineConfig, ScoringEngine

pytestmark = pytest.mark.dtype

# Lengths from a few tokens to several windows of 64, so batches mix widths and documents span batches.
TEXTS = [
    f"document {k}: " + " ".join(f"word{(k * 7 + j) % 29}" for j in range(3 + (k * 37) % 90)) for k in range(12)
]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    # One thread: several times faster on a loaded machine; the engine sets it for the whole process.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def engine_for(tiny_pair: tuple[Path, Path], dtype: str, **options: object) -> ScoringEngine:
    config = EngineConfig(dtype=dtype, device="cpu", max_length=64, token_budget=256, num_threads=1, **options)
    return ScoringEngine.from_pretrained(*tiny_pair, config)


def values(scores: list[DocScore]) -> list[tuple[float | None, float | None, int]]:
    return [(s.teacher_logprob, s.reference_logprob, s.n_tokens) for s in scores]


def test_batch_mates_move_a_score_only_within_the_dtype_tolerance(
    tiny_pair: tuple[Path, Path], engine_dtype: str, batch_tolerance: float
) -> None:
    engine = engine_for(tiny_pair, engine_dtype)
    together = engine.score(TEXTS)
    alone = [engine.score([t])[0] for t in TEXTS]
    assert engine.stats.batches > len(TEXTS) + 1  # several batches together, several windows alone
    moved = max(
        abs(a - b)
        for x, y in zip(together, alone, strict=True)
        for a, b in ((x.score, y.score), (x.teacher_logprob, y.teacher_logprob))
        if a is not None and b is not None
    )
    print(f"{engine.fingerprint.dtype}: largest move with batch-mates {moved:.3g} nats (tolerance {batch_tolerance})")
    assert moved <= batch_tolerance
    assert [s.n_tokens for s in together] == [s.n_tokens for s in alone]


def test_batch_invariant_scores_are_the_same_bits_in_any_batch(
    tiny_pair: tuple[Path, Path], engine_dtype: str
) -> None:
    engine = engine_for(tiny_pair, engine_dtype, batch_invariant=True)
    together = values(engine.score(TEXTS))
    alone = [values(engine.score([t]))[0] for t in TEXTS]
    reordered = values(engine.score([*TEXTS[::-1], "a batch-mate that was not there before"]))[: len(TEXTS)][::-1]
    assert together == alone == reordered  # exact: no tolerance


def test_batch_invariant_is_in_the_fingerprint_and_changes_nothing_else(tiny_pair: tuple[Path, Path]) -> None:
    batched = engine_for(tiny_pair, "float32")
    invariant = engine_for(tiny_pair, "float32", batch_invariant=True)
    assert batched.fingerprint.digest != invariant.fingerprint.digest  # the cache never mixes the two
    assert "batch_invariant" not in batched.fingerprint.as_dict()  # batched digests are as before
    for b, i in zip(batched.score(TEXTS), invariant.score(TEXTS), strict=True):
        assert i.score == pytest.approx(b.score, abs=1e-5)
