"""Loading a causal LM for scoring, and running it: one class, instantiated for teacher and reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from scoring.batching import PaddedBatch
from scoring.errors import ConfigError
from scoring.logprobs import picked_logprobs

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} requested but torch.cuda.is_available() is False")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16).

    Without them PyTorch emulates bf16 matmuls: on an AVX2-only CPU a 2048^3 bf16 matmul ran at
    0.3 GFLOP/s against 125 GFLOP/s in fp32, so `auto` must not pick bf16 there.
    """
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()) or bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` = bf16 where the hardware has native bf16 matrix units, fp32 elsewhere (fp16 never:
    its range overflows in long-context logits; ask for it explicitly if you want it)."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.float32


def load_tokenizer(name_or_path: str | Path, revision: str | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)


def context_length(config: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class ScoringModel:
    """A causal LM reduced to what scoring needs: the trunk (to final hidden states) and the LM head."""

    name: str
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, name_or_path: str | Path, *, dtype: torch.dtype, device: torch.device, revision: str | None = None) -> ScoringModel:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(name_or_path), revision=revision, dtype=dtype, attn_implementation="sdpa"
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model {str(name_or_path)!r}: {exc}") from exc
        model = model.to(device)  # type: ignore[arg-type]  # transformers' stub types `to` oddly
        model.eval().requires_grad_(False)
        scoring = cls(name=str(name_or_path), model=model, device=device, dtype=dtype)
        scoring._check_head_path()
        return scoring

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def vocab_rows(self) -> int:
        return int(self._head().weight.shape[0])

    def _head(self) -> torch.nn.Linear:
        head = self.model.get_output_embeddings()  # type: ignore[operator]
        if not isinstance(head, torch.nn.Linear):
            raise ConfigError(f"{self.name}: output embeddings are {type(head).__name__}, not a Linear LM head")
        return head

    def _trunk(self) -> torch.nn.Module:
        trunk = self.model.base_model
        assert isinstance(trunk, torch.nn.Module)
        return trunk

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        # non_blocking: from pinned memory the copy is queued behind the GPU's work, not waited for.
        out = self._trunk()(input_ids=input_ids.to(self.device, non_blocking=True), use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def counted_logprobs(self, batch: PaddedBatch, chunk_tokens: int) -> torch.Tensor:
        """Float32 log-prob of each counted prediction, in `batch.counted_rows` order, on the model's
        device. On a GPU this only queues work: nothing waits for it until the caller reads the result."""
        hidden = self.hidden_states(batch.input_ids)
        positions = batch.counted_positions.to(self.device, non_blocking=True)
        head = self._head()
        return picked_logprobs(
            hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions),
            head.weight,
            batch.counted_targets.to(self.device, non_blocking=True),
            chunk_tokens=chunk_tokens,
            head_bias=head.bias,
            logit_softcap=getattr(self.config, "final_logit_softcapping", None),
            logit_scale=getattr(self.config, "logit_scale", None),
        )

    @torch.inference_mode()
    def _check_head_path(self) -> None:
        """Refuse architectures whose logits are not head(trunk(x)) (the chunked path would be wrong)."""
        ids = torch.arange(1, 9, device=self.device).remainder(self.vocab_rows)[None, :]
        full = self.model(input_ids=ids, use_cache=False).logits.float()
        hidden = self.hidden_states(ids)
        head = self._head()
        logits = torch.nn.functional.linear(hidden, head.weight, head.bias).float()
        scale = getattr(self.config, "logit_scale", None)
        if scale is not None:
            logits = logits * scale
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        tol = 1e-3 if self.dtype == torch.float32 else 5e-2 * max(1.0, float(full.abs().max()))
        if not torch.allclose(full, logits, atol=tol, rtol=1e-3):
            raise ConfigError(
                f"{self.name}: {type(self.model).__name__} computes logits in a way reweigh cannot chunk "
                f"(max |diff| {float((full - logits).abs().max()):.3g}); it is not supported"
            )
