"""Stratified selection: one corpus-wide selection config turned into one config per group.

With `stratify_by`, selection runs inside each group (e.g. each source) instead of over the whole
corpus, so a source the teacher happens to find easy is not crowded out: documents are re-ranked
within their source and the mixture stays as it was (or as `group_shares` sets it). This module is
only the arithmetic of that split, pure and exact; corpus/sampler.py runs each group's selection.

- top-fraction `ratio`, no shares: every group keeps the same ratio of its eligible documents;
- top-fraction `keep_tokens`, soft targets (documents or tokens): the corpus-wide amount is split
  between groups in proportion to their eligible documents (or tokens);
- `group_shares`: each listed group's share of the output; unlisted groups share what is left in
  proportion to their eligible amount. A share that a group cannot fill is an error, never a
  silent shortfall.

Integer amounts are split by largest remainder over exact fractions, ties by group label, so the
parts always sum to the whole and never depend on float rounding or on the order groups were met.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from corpus.config import SelectionConfig
from scoring.errors import ConfigError


@dataclass(frozen=True)
class Stratum:
    """One group's part of the selection: its eligible amounts and the config it is selected with."""

    label: str
    documents: int  # eligible documents
    tokens: int  # their tokens
    config: SelectionConfig
    seed: int
    quota: int | None  # what it must keep (documents, tokens or soft target); None: its own ratio


def group_seed(seed: int, label: str) -> int:
    """A group's own seed: depends on its label only, not on which other groups exist."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{label}".encode()).digest()[:8], "little")


def apportion(total: int, weights: Sequence[Fraction], labels: Sequence[str]) -> list[int]:
    """`total` split in proportion to `weights`: floors, then one more to the largest remainders."""
    whole = sum(weights, Fraction(0))
    if total == 0 or whole == 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), labels[i]))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def strata(
    config: SelectionConfig,
    seed: int,
    labels: Sequence[str],
    documents: Sequence[int],
    tokens: Sequence[int],
) -> list[Stratum]:
    """The groups (sorted by label) with the config each is selected with."""
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    labels = [labels[i] for i in order]
    documents = [documents[i] for i in order]
    tokens = [tokens[i] for i in order]
    by_tokens = config.keep_tokens is not None or config.target_tokens is not None
    amount = tokens if by_tokens else documents
    total = _total(config, documents, tokens)
    if config.group_shares is None:
        quotas: list[int | None] = (
            [None] * len(labels)
            if total is None
            else list(apportion(total, [Fraction(a) for a in amount], labels))
        )
    else:
        quotas = list(_shared(config.group_shares, total if total is not None else 0, labels, amount, config))
    out = []
    for label, docs, toks, quota in zip(labels, documents, tokens, quotas, strict=True):
        out.append(
            Stratum(label, docs, toks, _group_config(config, quota, docs), group_seed(seed, label), quota)
        )
    return out


def _total(config: SelectionConfig, documents: Sequence[int], tokens: Sequence[int]) -> int | None:
    """The corpus-wide amount to split, or None where each group simply keeps the same ratio."""
    eligible = sum(documents)
    if config.method == "top-fraction":
        if config.keep_tokens is not None:
            if config.keep_tokens > sum(tokens):
                raise ConfigError(
                    f"keep_tokens={config.keep_tokens} exceeds the {sum(tokens)} tokens of the {eligible} "
                    "eligible documents"
                )
            return config.keep_tokens
        if config.group_shares is None:
            return None
        return math.ceil(round(config.effective_ratio * eligible, 9))  # as the unstratified cut counts
    if config.target_tokens is not None:
        return config.target_tokens
    return config.target_documents if config.target_documents is not None else eligible


def _shared(
    shares: dict[str, float], total: int, labels: list[str], amount: list[int], config: SelectionConfig
) -> list[int]:
    absent = sorted(set(shares) - set(labels))
    if absent:
        raise ConfigError(
            f"group_shares names {absent} but no eligible document has {config.stratify_by!r} equal to "
            f"{'it' if len(absent) == 1 else 'them'} (groups present: {labels[:20]})"
        )
    rest = 1 - sum((Fraction(v) for v in shares.values()), Fraction(0))
    unlisted = [a for label, a in zip(labels, amount, strict=True) if label not in shares]
    if rest > 0 and not any(unlisted):
        raise ConfigError(
            f"group_shares sum to {float(1 - rest):g} and every group present is listed: the other "
            f"{float(rest):g} of the output has no group to come from (make the shares sum to 1)"
        )
    pool = sum(unlisted)
    weights = [
        Fraction(shares[label]) if label in shares else (rest * a / pool if pool else Fraction(0))
        for label, a in zip(labels, amount, strict=True)
    ]
    quotas = apportion(total, weights, labels)
    if config.method == "top-fraction":
        for label, quota, a in zip(labels, quotas, amount, strict=True):
            if quota > a:
                unit = "tokens" if config.keep_tokens is not None else "documents"
                raise ConfigError(
                    f"group {label!r} must supply {quota} of the {total} {unit} kept (group_shares) but has "
                    f"only {a} eligible {unit}"
                )
    return quotas


def _group_config(config: SelectionConfig, quota: int | None, documents: int) -> SelectionConfig:
    """The plain (unstratified) config that selects exactly this group's quota from its documents."""
    if quota is None:
        return config
    if config.method == "top-fraction":
        if config.keep_tokens is not None:
            return config.model_copy(update={"keep_tokens": quota})
        # ceil(round(quota / n * n, 9)) == quota for every quota <= n: the cut keeps exactly `quota`.
        return config.model_copy(
            update={"ratio": quota / documents if documents else 1.0, "keep_tokens": None}
        )
    if config.target_tokens is not None:
        return config.model_copy(update={"target_tokens": quota})
    return config.model_copy(update={"target_documents": quota})
