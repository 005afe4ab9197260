"""The replication's noise generators: seeded, and each does what its name says."""

from __future__ import annotations

import random

import pytest

from embedded.noise import NOISE_KINDS, make_noise

CLEAN = "The quick brown fox jumps over the lazy dog.\nA teacher and a reference score each document in turn."
OTHER = "Every document gets a score; the student reads the best half of them, and learns more per token."


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_is_seeded_and_differs_from_its_source(kind: str) -> None:
    first = make_noise(kind, CLEAN, OTHER, random.Random(7))
    assert first == make_noise(kind, CLEAN, OTHER, random.Random(7))
    assert first not in (CLEAN, OTHER) and first.strip()


def test_shuffled_keeps_the_words() -> None:
    assert sorted(make_noise("shuffled", CLEAN, OTHER, random.Random(1)).split()) == sorted(CLEAN.split())


def test_boilerplate_varies_between_documents() -> None:
    rng = random.Random(3)
    docs = {make_noise("boilerplate", CLEAN, OTHER, rng) for _ in range(20)}
    assert len(docs) == 20  # never byte-identical: an exact-duplicate filter must not do the score's work


def test_near_duplicate_copies_the_other_document() -> None:
    text = make_noise("near_duplicate", CLEAN, OTHER * 5, random.Random(2))
    shared = set(text.split()) & set(OTHER.split())
    assert len(shared) > 0.8 * len(set(OTHER.split()))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown noise kind"):
        make_noise("typos", CLEAN, OTHER, random.Random(0))
