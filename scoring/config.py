"""Typed, validated-when-built configuration of the scoring engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from scoring.errors import ConfigError
from scoring.strict import StrictModel

if TYPE_CHECKING:
    from scoring.engine import ScoringEngine

DType = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(StrictModel):
    """How documents are scored. Every field that changes the numbers goes into the fingerprint.

    - `max_length`: tokens per window (the model input). None = the smaller context of the two models,
      capped at 2048. Longer documents are scored in consecutive windows.
    - `window_overlap`: tokens of the previous window that condition each later window (they are
      re-read but not re-counted). None = max_length // 4.
    - `token_budget`: padded tokens per forward batch (rows x longest row).
    - `logits_chunk_tokens`: tokens whose logits are materialised at once (chunk x vocab fp32 floats);
      None = as many as fit in 128 MiB for the model's vocabulary.
    - `batch_invariant`: score every window alone, in a row of its own length, so a document's score
      is a function of the document only, never of what it is batched with (the service batches
      across requests, a job by chunk). Costs the batching of short windows; see README "Determinism, and what it does not cover".
    """

    dtype: DType = Field(
        default="auto",
        description="auto: bf16 where the hardware multiplies it natively (AMX, AVX512-BF16, GPUs), else fp32",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N | mps")
    max_length: int | None = Field(
        default=None, ge=2, description="tokens per window (default: the models' context, at most 2048)"
    )
    window_overlap: int | None = Field(
        default=None, ge=0, description="context tokens re-read by each later window (default max_length/4)"
    )
    token_budget: int = Field(default=16384, ge=1, description="padded tokens per forward batch")
    logits_chunk_tokens: int | None = Field(
        default=None, ge=1, description="tokens whose logits are materialised at once (default: 128 MiB worth)"
    )
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    batch_invariant: bool = Field(
        default=False,
        description="score each window alone, so a score never depends on its batch-mates (slower on short documents)",
    )

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.max_length is not None:
            if self.window_overlap is not None and self.window_overlap >= self.max_length:
                raise ConfigError(
                    f"window_overlap={self.window_overlap} must be smaller than max_length={self.max_length}"
                )
            if self.token_budget < self.max_length:
                raise ConfigError(
                    f"token_budget={self.token_budget} must hold at least one full window (max_length={self.max_length})"
                )
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"device={dev!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return self


@dataclass(frozen=True)
class PairSpec:
    """A teacher/reference pair to load where a job runs (picklable: Ray ships it to its workers)."""

    teacher: str
    reference: str
    engine: EngineConfig = field(default_factory=EngineConfig)
    teacher_revision: str | None = None
    reference_revision: str | None = None
    cache: str | None = None  # SQLite score cache; local runs only (one file cannot serve a cluster)

    def build(self) -> ScoringEngine:
        from transformers.utils import logging as hf_logging

        from scoring.engine import ScoringEngine

        hf_logging.disable_progress_bar()  # per-worker load bars would flood the log
        return ScoringEngine.from_pretrained(
            self.teacher,
            self.reference,
            self.engine,
            teacher_revision=self.teacher_revision,
            reference_revision=self.reference_revision,
            cache=self.cache,
        )


PROXY_PREFIX = "proxy:"
# band=auto's default confidence that the chosen band reaches the asked agreement (one-sided).
AUTO_CONFIDENCE = 0.95


class ScorerConfig(StrictModel):
    """Which scorer a rewrite job runs: the teacher/reference pair (default), a proxy distilled from
    it (`reweigh distill`) alone, or a cascade: the proxy everywhere and the pair only on documents
    whose proxy score lies within `band` of the selection threshold (scoring/proxy/cascade.py).
    Options of the cascade are refused without one, not silently ignored."""

    scorer: str = Field(
        default="pair", min_length=1, max_length=4096,
        description="pair, or proxy:DIR to score with a proxy from `reweigh distill` alone (no language model runs)",
    )
    cascade: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="proxy:DIR: the proxy everywhere, the pair only where the proxy score is near the selection threshold",
    )
    band: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["auto"] = Field(
        default=0.3,
        description="cascade: share of documents around the threshold (by the proxy's held-out scores) sent to the "
        "pair, or auto: the least band whose cascade reaches --agreement on the proxy's calibration split",
    )
    agreement: float = Field(
        default=0.97, gt=0.0, le=1.0,
        description="cascade with band=auto: the top-ratio agreement with a pair-only run to reach",
    )
    confidence: float = Field(
        default=AUTO_CONFIDENCE, ge=0.5, lt=1.0,
        description="cascade with band=auto: confidence that the band reaches --agreement (a one-sided Wilson "
        "lower bound on the calibration split; 0.5: the point estimate)",
    )
    audit_documents: int = Field(
        default=100, ge=0, le=1_000_000,
        description="cascade: documents outside the band also scored by the pair (seeded sample), to report "
        "how often it would have decided otherwise; 0: no audit",
    )

    @field_validator("band", mode="before")
    @classmethod
    def _number_or_auto(cls, value: Any) -> Any:
        # One message for both forms (and a flag's text becomes a number here, not in argparse).
        if isinstance(value, str) and value != "auto":
            try:
                return float(value)
            except ValueError:
                raise ValueError("expected a share in [0, 1] or auto") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> ScorerConfig:
        if self.scorer != "pair":
            _proxy_directory(self.scorer, "scorer")
        if self.cascade is not None:
            _proxy_directory(self.cascade, "cascade")
            if self.scorer != "pair":
                raise ConfigError(f"scorer={self.scorer!r} and cascade={self.cascade!r} exclude each other: give one")
        else:
            for name in ("band", "agreement", "confidence", "audit_documents"):
                if name in self.model_fields_set:
                    raise ConfigError(f"{name}={getattr(self, name)!r} applies to a cascade only (cascade=proxy:DIR)")
        for name in ("agreement", "confidence"):
            if name in self.model_fields_set and self.band != "auto":
                raise ConfigError(f"{name}={getattr(self, name)} applies to band='auto' only (band={self.band} was given)")
        return self

    @property
    def auto_agreement(self) -> float | None:
        """The level band=auto must reach; None when the band is given."""
        return self.agreement if self.band == "auto" else None

    @property
    def kind(self) -> Literal["pair", "proxy", "cascade"]:
        return "cascade" if self.cascade is not None else "pair" if self.scorer == "pair" else "proxy"

    @property
    def proxy_directory(self) -> str | None:
        """The proxy's directory (proxy or cascade), None for the pair alone."""
        if self.cascade is not None:
            return _proxy_directory(self.cascade, "cascade")
        return None if self.scorer == "pair" else _proxy_directory(self.scorer, "scorer")


def _proxy_directory(value: str, name: str) -> str:
    if not value.startswith(PROXY_PREFIX) or len(value) == len(PROXY_PREFIX):
        raise ConfigError(f"{name}={value!r}: expected proxy:DIR (a directory made by `reweigh distill`)")
    return value[len(PROXY_PREFIX) :]
