"""Sparse text features for the proxy: a pure function of (token ids, text), no state.

Two families, both stateless so that a proxy is its coefficients plus these parameters:

- `tokens`: counts of the pair's own tokens and token bigrams, divided by the document's token
  count. The difference score is a per-token *mean* of teacher-minus-reference log-probs, so a
  linear model over per-token frequencies is a mean of learnt per-token (and per-bigram)
  contributions: the same shape as the quantity it imitates. Unigrams index the vocabulary
  directly; bigrams are hashed into `2**hash_bits` columns after it.
- `chars`: scikit-learn's HashingVectorizer over character n-grams inside word boundaries,
  L1-normalised: tokenizer-independent, and sensitive to spelling damage and random characters.
- `stats`: a few dense numbers per document (`STATS`): its length in tokens, characters per token,
  the shares of letters, digits, spaces, capitals and other characters, and how repetitive its
  tokens and token bigrams are. They describe the document as a whole, which a sum of per-token
  contributions cannot: a difference score moves with length and with repetition (a repeated
  passage is easy for both models).

A family is blocks joined by "+", in the order of FAMILIES (cheapest first).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

Family = Literal["tokens", "tokens+stats", "chars", "tokens+chars", "tokens+chars+stats"]
# Cheapest first: distill prefers the earliest family within its tolerance of the best.
FAMILIES: tuple[Family, ...] = ("tokens", "tokens+stats", "chars", "tokens+chars", "tokens+chars+stats")
STATS = (
    "log_tokens", "chars_per_token", "letters", "digits", "spaces", "capitals", "other_chars",
    "distinct_tokens", "distinct_bigrams",
)

# Fibonacci hashing of a 64-bit bigram key (golden-ratio multiplier, keep the top bits): one
# vectorised multiply, stable across platforms and numpy versions.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
CHAR_NGRAMS = (2, 4)


def _token_entries(
    ids_per_doc: Sequence[Sequence[int]], vocab_size: int, hash_bits: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(row, column, 1/tokens) per unigram and bigram occurrence; summed, they are the features."""
    n_docs = len(ids_per_doc)
    lengths = np.fromiter((len(ids) for ids in ids_per_doc), dtype=np.int64, count=n_docs)
    flat = np.fromiter(chain.from_iterable(ids_per_doc), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        raise ValueError(f"token id out of range for a vocabulary of {vocab_size}")
    doc_of = np.repeat(np.arange(n_docs), lengths)
    # A bigram pairs a token with its predecessor in the same document.
    follows = np.ones(flat.size, dtype=bool)
    starts = np.cumsum(lengths) - lengths
    follows[starts[lengths > 0]] = False
    follows_idx = np.flatnonzero(follows)
    key = (flat[follows_idx - 1].astype(np.uint64) * np.uint64(vocab_size)) + flat[follows_idx].astype(np.uint64)
    bigram_col = vocab_size + ((key * _GOLDEN) >> np.uint64(64 - hash_bits)).astype(np.int64)
    rows = np.concatenate([doc_of, doc_of[follows_idx]])
    cols = np.concatenate([flat, bigram_col])
    weight_per_doc = 1.0 / np.maximum(lengths, 1)
    return rows, cols, weight_per_doc[rows]


def token_features(ids_per_doc: Sequence[Sequence[int]], vocab_size: int, hash_bits: int) -> sp.csr_matrix:
    """Per-token frequencies of unigrams (column = token id) and hashed bigrams (after the vocabulary)."""
    rows, cols, data = _token_entries(ids_per_doc, vocab_size, hash_bits)
    shape = (len(ids_per_doc), vocab_size + (1 << hash_bits))
    return sp.coo_matrix((data, (rows, cols)), shape=shape).tocsr()  # sums repeats: counts become frequencies


def token_dot(
    ids_per_doc: Sequence[Sequence[int]], vocab_size: int, hash_bits: int, coef: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """token_features(...) @ coef without building the matrix (the scoring path: no sort, no merge)."""
    rows, cols, data = _token_entries(ids_per_doc, vocab_size, hash_bits)
    return np.asarray(np.bincount(rows, weights=coef[cols] * data, minlength=len(ids_per_doc)), dtype=np.float64)


def char_vectorizer(hash_bits: int) -> HashingVectorizer:
    return HashingVectorizer(
        analyzer="char_wb",
        ngram_range=CHAR_NGRAMS,
        n_features=1 << hash_bits,
        alternate_sign=False,
        norm="l1",
        lowercase=False,  # capitals carry signal (garbled text loses sentence capitals)
        dtype=np.float64,
    )


def stats_features(texts: Sequence[str], ids_per_doc: Sequence[Sequence[int]]) -> npt.NDArray[np.float64]:
    """One row of STATS per document (a document without tokens: zeros)."""
    out = np.zeros((len(texts), len(STATS)), dtype=np.float64)
    for i, (text, ids) in enumerate(zip(texts, ids_per_doc, strict=True)):
        n, chars = len(ids), max(len(text), 1)
        if not n:
            continue
        letters = sum(c.isalpha() for c in text)
        digits = sum(c.isdigit() for c in text)
        spaces = sum(c.isspace() for c in text)
        capitals = sum(c.isupper() for c in text)
        bigrams = len(set(pairwise(ids))) / (n - 1) if n > 1 else 1.0
        out[i] = (
            np.log1p(n), len(text) / n, letters / chars, digits / chars, spaces / chars, capitals / chars,
            1.0 - (letters + digits + spaces) / chars, len(set(ids)) / n, bigrams,
        )
    return out


def _blocks(family: Family) -> list[str]:
    return family.split("+")


def _widths(family: Family, vocab_size: int, hash_bits: int) -> list[tuple[str, int]]:
    width = {"tokens": vocab_size + (1 << hash_bits), "chars": 1 << hash_bits, "stats": len(STATS)}
    return [(block, width[block]) for block in _blocks(family)]


def build_features(
    family: Family,
    texts: Sequence[str],
    ids_per_doc: Sequence[Sequence[int]],
    vocab_size: int,
    hash_bits: int,
) -> sp.csr_matrix:
    blocks: list[sp.spmatrix] = []
    for block, _ in _widths(family, vocab_size, hash_bits):
        if block == "tokens":
            blocks.append(token_features(ids_per_doc, vocab_size, hash_bits))
        elif block == "chars":
            blocks.append(char_vectorizer(hash_bits).transform(list(texts)))
        else:
            blocks.append(sp.csr_matrix(stats_features(texts, ids_per_doc)))
    if len(blocks) == 1:
        return sp.csr_matrix(blocks[0])
    return sp.csr_matrix(sp.hstack(blocks, format="csr"))


def feature_count(family: Family, vocab_size: int, hash_bits: int) -> int:
    return sum(width for _, width in _widths(family, vocab_size, hash_bits))


def predict(
    family: Family,
    texts: Sequence[str],
    ids_per_doc: Sequence[Sequence[int]],
    vocab_size: int,
    hash_bits: int,
    coef: npt.NDArray[np.float64],
    intercept: float,
) -> npt.NDArray[np.float64]:
    """build_features(...) @ coef + intercept, the fast way for each block."""
    out = np.full(len(texts), intercept, dtype=np.float64)
    start = 0
    for block, width in _widths(family, vocab_size, hash_bits):
        part = coef[start : start + width]
        if block == "tokens":
            out += token_dot(ids_per_doc, vocab_size, hash_bits, part)
        elif block == "chars":
            out += np.asarray(char_vectorizer(hash_bits).transform(list(texts)) @ part, dtype=np.float64)
        else:
            out += stats_features(texts, ids_per_doc) @ part
        start += width
    return out
