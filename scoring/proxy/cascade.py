"""The cascade: the proxy everywhere, the pair only where the proxy is unsure of the keep/drop decision.

For a top-alpha selection the only thing that matters about a document is which side of the
threshold it falls on. The proxy's own out-of-fold score distribution (stored in its directory)
says where its top-alpha threshold lies and which scores surround it: the band holds the share
`band` of documents nearest the threshold, `[Q(1-alpha-band/2), Q(1-alpha+band/2)]`. Documents
scored inside it go to the pair, whose score replaces the proxy's; the others keep the proxy's
calibrated score, which is on the pair's scale, so one global selection ranks them all together.

`band="auto"` with an `agreement` level picks the band when the cascade is built: the least band
whose cascade reaches that top-alpha agreement with the pair on the proxy's calibration split with
`confidence` (a one-sided lower confidence bound, not the point estimate; scoring/proxy/train.py
`auto_band` states the rule).

The band is fixed when the cascade is built (from the proxy directory, alpha and band), so a
document's cascade score depends on that document alone: a rerun, a resumed job or another
chunking gives the same decision per document, and where the pair ran the number is the pair's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scoring.config import AUTO_CONFIDENCE
from scoring.errors import ConfigError
from scoring.protocols import ProgressFn, Scorer, ScorerSpec
from scoring.proxy.model import ProxyScorer, ProxySpec
from scoring.proxy.train import auto_band, band_limits
from scoring.types import DocScore

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CascadeFingerprint:
    proxy: dict[str, Any]
    pair: dict[str, Any]
    alpha: float
    band: float
    low: float
    high: float
    agreement: float | None = None  # the level asked of band="auto" (None: the band was given)
    confidence: float | None = None  # band="auto": the confidence it is reached with (None: the band was given)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        body = json.dumps(self._body(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "digest", hashlib.sha256(body.encode()).hexdigest())

    def _body(self) -> dict[str, Any]:
        # json has no infinities: an open end of the band is written as null.
        def finite(x: float) -> float | None:
            return x if abs(x) != float("inf") else None

        body = {
            "scorer": "cascade",
            "proxy": self.proxy,
            "pair": self.pair,
            "alpha": self.alpha,
            "band": self.band,
            "proxy_band": [finite(self.low), finite(self.high)],
        }
        if self.agreement is not None:
            body["band_auto_agreement"] = self.agreement
        if self.confidence is not None:
            body["band_auto_confidence"] = self.confidence
        return body

    def as_dict(self) -> dict[str, Any]:
        return {**self._body(), "digest": self.digest}


@dataclass
class CascadeStats:
    documents: int = 0  # documents the proxy scored "ok"
    pair_documents: int = 0  # of those, sent to the pair

    @property
    def pair_share(self) -> float:
        return self.pair_documents / self.documents if self.documents else 0.0


class CascadeScorer:
    """`CascadeScorer(proxy, pair, alpha=0.5, band=0.3).score(texts)`, or `band="auto", agreement=0.97`
    (reached with `confidence`, 95% unless given).

    Proxy-scored documents carry `teacher_logprob = reference_logprob = None`; pair-scored ones
    carry the pair's DocScore unchanged. `stats.pair_share` is the share that needed the pair.
    """

    def __init__(
        self,
        proxy: ProxyScorer,
        pair: Scorer,
        *,
        alpha: float,
        band: float | Literal["auto"],
        agreement: float | None = None,
        confidence: float = AUTO_CONFIDENCE,
    ) -> None:
        self.proxy, self.pair = proxy, pair
        check_band(band, agreement, confidence)
        auto = band == "auto"
        if band == "auto":
            assert agreement is not None  # check_band
            band = auto_band(proxy.model, alpha, agreement, confidence)
            log.info("band=auto: band %.2f reaches agreement %.3f with confidence %.3f at alpha %.3f on the calibration split",
                     band, agreement, confidence, alpha)
        self.low, self.high = band_limits(proxy.model, alpha, band)
        self.alpha, self.band = alpha, band
        trained_on = (proxy.fingerprint.pair or {}).get("digest")
        if trained_on is not None and trained_on != pair.fingerprint.digest:
            # Allowed (e.g. the same models in another dtype), but the calibration was learnt on the other pair.
            log.warning(
                "proxy was distilled from pair %s, the cascade runs pair %s", trained_on[:12], pair.fingerprint.digest[:12]
            )
        self.fingerprint = CascadeFingerprint(
            proxy=proxy.fingerprint.as_dict(),
            pair=pair.fingerprint.as_dict(),
            alpha=alpha,
            band=band,
            low=self.low,
            high=self.high,
            agreement=agreement,
            confidence=confidence if auto else None,
        )
        self.stats = CascadeStats()
        self._lock = threading.Lock()

    def in_band(self, result: DocScore) -> bool:
        return result.ok and result.score is not None and self.low <= result.score <= self.high

    def score(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]:
        with self._lock:
            results = self.proxy.score(texts)
            sent = [i for i, r in enumerate(results) if self.in_band(r)]
            if sent:
                for i, r in zip(sent, self.pair.score([texts[i] for i in sent]), strict=True):
                    results[i] = r
            self.stats.documents += sum(1 for r in results if r.ok)
            self.stats.pair_documents += len(sent)
        if progress is not None and texts:
            progress(len(texts), sum(r.n_tokens for r in results))
        return results

    def close(self) -> None:
        close = getattr(self.pair, "close", None)
        if close is not None:
            close()


def check_band(band: float | Literal["auto"], agreement: float | None, confidence: float = AUTO_CONFIDENCE) -> None:
    if not 0.5 <= confidence < 1.0:
        raise ConfigError(f"confidence={confidence} must be in [0.5, 1) (0.5: the point estimate)")
    if band == "auto":
        if agreement is None or not 0.0 < agreement <= 1.0:
            raise ConfigError(f"band='auto' needs agreement in (0, 1] (got agreement={agreement})")
    else:
        if not 0.0 <= band <= 1.0:
            raise ConfigError(f"band={band} must be in [0, 1]")
        if agreement is not None:
            raise ConfigError(f"agreement={agreement} applies to band='auto' only (band={band} was given)")


@dataclass(frozen=True)
class CascadeSpec:
    """A picklable recipe: the proxy directory, a spec of the pair, alpha, and band (or "auto" + agreement)."""

    proxy: ProxySpec
    pair: ScorerSpec
    alpha: float
    band: float | Literal["auto"]
    agreement: float | None = None
    confidence: float = AUTO_CONFIDENCE

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha={self.alpha} must be in (0, 1) for a cascade")
        check_band(self.band, self.agreement, self.confidence)

    def build(self) -> CascadeScorer:
        return CascadeScorer(
            self.proxy.build(), self.pair.build(), alpha=self.alpha, band=self.band, agreement=self.agreement,
            confidence=self.confidence,
        )

