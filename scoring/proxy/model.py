"""The proxy scorer: a linear model over sparse text features that predicts the pair's difference score.

A proxy directory (written by `reweigh distill`, read by `ProxyScorer.load`) holds:

- `proxy.json`: feature family and sizes, intercept, the calibration knots, the distribution of its
  out-of-fold scores (which the cascade reads its band from), and what it was trained on (the
  pair's fingerprint, sample sizes, seed, the candidates measured);
- `weights.safetensors`: the non-zero coefficients (`index`, `value`);
- `tokenizer/`: the pair's tokenizer, so `n_tokens` and the empty/blank statuses are the pair's own;
- `agreement.json`: the agreement report on the held-out split.

No pickle: loading a proxy runs no code from the directory, and the files are byte-identical when
the same sample is distilled again with the same seed.

Scores are *calibrated*: the raw linear prediction is mapped through a monotone quantile map onto
the pair's score distribution, so a proxy score reads in the pair's units (nats/token) and the
proxy's top-alpha threshold lands where the pair's does. A monotone map changes no rank, so the
agreement figures are those of the raw model.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from scoring.errors import ConfigError, InputError
from scoring.protocols import ProgressFn
from scoring.proxy.features import Family, feature_count, predict
from scoring.types import STATUS_BLANK, STATUS_EMPTY, STATUS_OK, DocScore

# Bump when the numbers a given proxy directory produces for a text could change.
PROXY_DEFINITION_VERSION = "1"
FORMAT = "reweigh-proxy/1"
CARD_NAME = "proxy.json"
WEIGHTS_NAME = "weights.safetensors"
TOKENIZER_DIR = "tokenizer"
AGREEMENT_NAME = "agreement.json"
CALIBRATION_PROXY, CALIBRATION_PAIR = "calibration_proxy", "calibration_pair"

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """Monotone map from raw predictions to the pair's score scale (quantile matching).

    Inside the knots: linear interpolation. Outside: slope 1 from the end knots, so the map stays
    strictly increasing and a document beyond the training range keeps its rank.
    """

    raw: tuple[float, ...]
    calibrated: tuple[float, ...]

    @classmethod
    def fit(cls, raw: Floats, target: Floats, knots: int = 1001) -> Calibration:
        levels = np.linspace(0.0, 1.0, min(knots, len(raw)))
        raw_q = np.quantile(raw, levels)
        target_q = np.quantile(target, levels)
        raw_q, first = np.unique(raw_q, return_index=True)  # np.interp needs increasing knots
        return cls(tuple(raw_q.tolist()), tuple(target_q[first].tolist()))

    def __call__(self, raw: Floats) -> Floats:
        xp, fp = np.asarray(self.raw), np.asarray(self.calibrated)
        out = np.interp(raw, xp, fp)
        out = np.where(raw < xp[0], fp[0] + (raw - xp[0]), out)
        return np.where(raw > xp[-1], fp[-1] + (raw - xp[-1]), out)


@dataclass(frozen=True)
class ProxyFingerprint:
    """What decides a proxy's numbers: its files' hash, and what it was distilled from."""

    proxy_sha256: str  # over proxy.json, the weights and the tokenizer files
    pair: dict[str, Any] | None  # the fingerprint of the pair whose scores it learnt
    family: str
    training_documents: int
    seed: int
    definition: str = PROXY_DEFINITION_VERSION
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        body = json.dumps(self._body(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "digest", hashlib.sha256(body.encode()).hexdigest())

    def _body(self) -> dict[str, Any]:
        return {
            "scorer": "proxy",
            "proxy_sha256": self.proxy_sha256,
            "pair": self.pair,
            "family": self.family,
            "training_documents": self.training_documents,
            "seed": self.seed,
            "definition": self.definition,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self._body(), "digest": self.digest}


@dataclass(frozen=True)
class ProxyModel:
    """Everything a proxy computes with; `card` is the rest of proxy.json (provenance, measurements)."""

    family: Family
    vocab_size: int
    hash_bits: int
    coef: Floats
    intercept: float
    calibration: Calibration
    # Sorted calibrated out-of-fold scores at evenly spaced quantile levels: the proxy's score
    # distribution on documents it was not fitted on (the cascade's band comes from it).
    score_quantiles: tuple[float, ...]
    card: dict[str, Any]
    # The calibration split (`--band auto` reads it): per training document, its calibrated
    # out-of-fold proxy score and the pair's score. None in directories from before it was kept.
    calibration_proxy: Floats | None = None
    calibration_pair: Floats | None = None

    def raw_scores(self, texts: Sequence[str], ids_per_doc: Sequence[Sequence[int]]) -> Floats:
        return predict(self.family, texts, ids_per_doc, self.vocab_size, self.hash_bits, self.coef, self.intercept)

    def quantile(self, level: float) -> float:
        """The proxy's score at quantile `level` in [0, 1] of its out-of-fold distribution."""
        q = np.asarray(self.score_quantiles)
        return float(np.interp(level, np.linspace(0.0, 1.0, len(q)), q))

    def save(self, directory: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Writes the model files into `directory` (the caller publishes it atomically)."""
        nonzero = np.flatnonzero(self.coef)
        tensors = {"index": nonzero.astype(np.int64), "value": self.coef[nonzero]}
        if self.calibration_proxy is not None and self.calibration_pair is not None:
            tensors |= {CALIBRATION_PROXY: self.calibration_proxy, CALIBRATION_PAIR: self.calibration_pair}
        save_file(tensors, str(directory / WEIGHTS_NAME))
        tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        card = {
            **self.card,
            "format": FORMAT,
            "family": self.family,
            "vocab_size": self.vocab_size,
            "hash_bits": self.hash_bits,
            "intercept": self.intercept,
            "calibration": {"raw": list(self.calibration.raw), "calibrated": list(self.calibration.calibrated)},
            "score_quantiles": list(self.score_quantiles),
        }
        (directory / CARD_NAME).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ProxyModel:
        path = directory / CARD_NAME
        if not path.is_file():
            raise InputError(f"{str(directory)!r} is not a proxy directory (no {CARD_NAME}; make one with `reweigh distill`)")
        card = json.loads(path.read_text())
        if card.get("format") != FORMAT:
            raise InputError(f"{str(path)!r} has format {card.get('format')!r}; this reweigh reads {FORMAT!r}")
        family, vocab, bits = card["family"], int(card["vocab_size"]), int(card["hash_bits"])
        tensors = load_file(str(directory / WEIGHTS_NAME))
        coef = np.zeros(feature_count(family, vocab, bits), dtype=np.float64)
        coef[tensors["index"]] = tensors["value"]
        cal = card["calibration"]
        known = {"format", "family", "vocab_size", "hash_bits", "intercept", "calibration", "score_quantiles"}
        return cls(
            family=family,
            vocab_size=vocab,
            hash_bits=bits,
            coef=coef,
            intercept=float(card["intercept"]),
            calibration=Calibration(tuple(cal["raw"]), tuple(cal["calibrated"])),
            score_quantiles=tuple(card["score_quantiles"]),
            card={k: v for k, v in card.items() if k not in known},
            calibration_proxy=tensors.get(CALIBRATION_PROXY),
            calibration_pair=tensors.get(CALIBRATION_PAIR),
        )


def directory_sha256(directory: Path) -> str:
    """sha256 over the proxy's files (agreement.json excluded: it describes, it does not decide)."""
    digest = hashlib.sha256()
    files = [directory / CARD_NAME, directory / WEIGHTS_NAME, *sorted((directory / TOKENIZER_DIR).iterdir())]
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class ProxyStats:
    documents: int = 0
    seconds: float = 0.0

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0


class ProxyScorer:
    """`ProxyScorer.load(dir).score(texts)`: difference scores predicted from text, no LM run.

    Results are DocScores with the pair's `n_tokens` and statuses, the proxy's score, and
    `teacher_logprob = reference_logprob = None`: the models did not run, and no number is
    invented for them.
    """

    def __init__(self, model: ProxyModel, tokenizer: PreTrainedTokenizerBase, fingerprint: ProxyFingerprint) -> None:
        self.model, self.tokenizer, self.fingerprint = model, tokenizer, fingerprint
        self.stats = ProxyStats()
        self._lock = threading.Lock()  # a fast tokenizer must not be entered by two threads at once

    @classmethod
    def load(cls, directory: str | Path) -> ProxyScorer:
        directory = Path(directory)
        model = ProxyModel.load(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR)
        training = model.card.get("training", {})
        fingerprint = ProxyFingerprint(
            proxy_sha256=directory_sha256(directory),
            pair=training.get("pair"),
            family=model.family,
            training_documents=int(training.get("documents", 0)),
            seed=int(training.get("seed", 0)),
        )
        return cls(model, tokenizer, fingerprint)

    def score(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        with self._lock:
            started = time.perf_counter()
            results = self._score(texts)
            self.stats.documents += len(texts)
            self.stats.seconds += time.perf_counter() - started
        if progress is not None and texts:
            progress(len(texts), sum(r.n_tokens for r in results))
        return results

    def _score(self, texts: Sequence[str]) -> list[DocScore]:
        if not texts:
            return []
        blank = [not t.strip() for t in texts]
        ids_per_doc = self.tokenizer(["" if b else t for t, b in zip(texts, blank, strict=True)], add_special_tokens=False)["input_ids"]
        if any(max(ids, default=0) >= self.model.vocab_size for ids in ids_per_doc):
            raise ConfigError(f"the proxy's tokenizer yields ids beyond its vocabulary of {self.model.vocab_size}")
        scores = self.model.calibration(self.model.raw_scores(texts, ids_per_doc))
        results = []
        for text, is_blank, ids, value in zip(texts, blank, ids_per_doc, scores.tolist(), strict=True):
            if is_blank and text:
                results.append(DocScore.not_scored(STATUS_BLANK))
            elif not ids:
                results.append(DocScore.not_scored(STATUS_EMPTY))
            else:
                results.append(DocScore(len(ids), None, None, float(value), STATUS_OK))
        return results

    def close(self) -> None:
        """Nothing to release; present so a proxy stands wherever an engine does."""


@dataclass(frozen=True)
class ProxySpec:
    """A picklable recipe for a ProxyScorer (Ray workers build their own from it)."""

    directory: str

    def build(self) -> ProxyScorer:
        return ProxyScorer.load(self.directory)
