"""Typed, validated-when-built configuration of the scoring engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from scoring.errors import ConfigError
from scoring.strict import StrictModel

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
      across requests, a job by chunk). Costs the batching of short windows; see README "Batch dependence".
    """

    dtype: DType = "auto"
    device: str = "auto"
    max_length: int | None = Field(default=None, ge=2)
    window_overlap: int | None = Field(default=None, ge=0)
    token_budget: int = Field(default=16384, ge=1)
    logits_chunk_tokens: int | None = Field(default=None, ge=1)
    num_threads: int | None = Field(default=None, ge=1)
    batch_invariant: bool = False

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
