"""Which scorer a rewrite job runs, checked against its selection before anything loads or runs.

The pair scores every document; a proxy scores every document without an LM (no log-probs); a
cascade runs the proxy everywhere and the pair near the threshold of a top-ratio selection. What
does not combine is refused here, naming both values: a teacher floor needs every document's teacher
log-prob; a cascade's band surrounds one top-`ratio` threshold, so it needs a ratio to surround and no
strata (each with its own threshold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corpus.config import SelectionConfig
from scoring.config import ScorerConfig
from scoring.errors import ConfigError, InputError
from scoring.protocols import ScorerSpec


def scorer_spec(choice: ScorerConfig, selection: SelectionConfig, pair: ScorerSpec | None) -> ScorerSpec:
    """The spec the job's workers build. `pair` (a PairSpec, or the service's engine in a BuiltScorer) is
    needed unless the proxy scores alone."""
    # Here, not at import: the proxy pulls in transformers and scikit-learn, which a pair job never needs.
    from scoring.proxy.cascade import CascadeSpec
    from scoring.proxy.model import CARD_NAME, ProxyModel, ProxySpec
    from scoring.proxy.train import auto_band

    if choice.kind == "pair":
        if pair is None:
            raise ConfigError("the pair scores this job: give a teacher and a reference (or scorer=proxy:DIR)")
        return pair
    option = "scorer" if choice.kind == "proxy" else "cascade"
    if selection.min_teacher_logprob is not None:
        raise ConfigError(
            f"min_teacher_logprob={selection.min_teacher_logprob} needs the teacher's log-prob of every "
            f"document, and {option}={getattr(choice, option)!r} scores documents without one: drop the floor, "
            "or score with the pair"
        )
    directory = choice.proxy_directory
    assert directory is not None  # a proxy or a cascade
    if not (Path(directory) / CARD_NAME).is_file():
        raise InputError(f"{option}={getattr(choice, option)!r}: {directory!r} is not a proxy directory "
                         f"(no {CARD_NAME}; make one with `reweigh distill`)")
    proxy = ProxySpec(directory)
    if choice.kind == "proxy":
        return proxy
    if selection.method != "top-fraction" or selection.keep_tokens is not None:
        what = f"method={selection.method!r}" if selection.method != "top-fraction" else f"keep_tokens={selection.keep_tokens}"
        raise ConfigError(
            f"cascade={choice.cascade!r} with {what}: the cascade's band surrounds the threshold of a "
            "top-fraction selection by ratio"
        )
    if selection.stratify_by is not None:
        raise ConfigError(
            f"cascade={choice.cascade!r} with stratify_by={selection.stratify_by!r}: each group has its own "
            "threshold, and the cascade's band surrounds one (a proxy alone can stratify)"
        )
    if selection.effective_ratio >= 1.0:
        raise ConfigError(f"cascade={choice.cascade!r} with ratio={selection.ratio}: every document is kept, there is no threshold to refine")
    if pair is None:
        raise ConfigError(f"cascade={choice.cascade!r} runs the pair near the threshold: give a teacher and a reference")
    if choice.auto_agreement is not None:
        # Resolved again when the cascade is built; here, so that a level the proxy's calibration split cannot
        # promise is refused before a job is created (milliseconds: no model loads).
        auto_band(ProxyModel.load(Path(directory)), selection.effective_ratio, choice.auto_agreement, choice.confidence)
    return CascadeSpec(proxy, pair, alpha=selection.effective_ratio, band=choice.band, agreement=choice.auto_agreement,
                       confidence=choice.confidence)


def scorer_kind(fingerprint: dict[str, Any]) -> str:
    """pair, proxy or cascade, from a scorer's fingerprint (the pair's predates the `scorer` key)."""
    return str(fingerprint.get("scorer", "pair"))
