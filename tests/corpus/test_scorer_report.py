"""The cascade's audit sample: a function of the documents and the seed, not of how they stream by."""

from __future__ import annotations

import hashlib

import numpy as np

from corpus.steps.scorer_report import _Sample


def _offer_in(pieces: list[int], seed: int, size: int) -> list[tuple[int, int, bytes, float]]:
    hashes = [hashlib.sha256(f"doc {i}".encode()).digest() for i in range(sum(pieces))]
    sample = _Sample(size, seed)
    start = 0
    for piece in pieces:
        rows = np.arange(start, start + piece, dtype=np.int64)
        sample.offer(0, rows, hashes[start : start + piece], rows.astype(np.float64) / 10)
        start += piece
    return sample.picked()


def test_the_sample_does_not_depend_on_chunking_and_follows_the_seed() -> None:
    whole = _offer_in([200], seed=3, size=17)
    assert len(whole) == 17 and whole == sorted(whole, key=lambda it: it[1])
    assert _offer_in([1, 50, 7, 142], seed=3, size=17) == whole
    assert _offer_in([10] * 20, seed=3, size=17) == whole
    other = _offer_in([200], seed=4, size=17)
    assert other != whole and len(other) == 17
    assert len(_offer_in([5], seed=3, size=17)) == 5  # fewer candidates than asked: all of them
    # Smaller samples are nested in larger ones (the smallest keys), so raising the size only adds documents.
    assert set(_offer_in([200], seed=3, size=5)) <= set(whole)
