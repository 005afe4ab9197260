"""Loading a causal LM for scoring, and running it: one class, instantiated for teacher and reference."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

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


def first_line(exc: BaseException) -> str:
    """An exception as one line: transformers' messages run to dozens of lines (lists of model types)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def check_model_source(name_or_path: str | Path, role: str = "model") -> None:
    """Refuse, in one line, a model argument that cannot load, before transformers fails in forty.

    A path that exists must be a directory with a readable config.json of a causal LM. A name that
    is not a path must at least be a well-formed hub id (the hub itself is only asked when loading).
    """
    name = str(name_or_path)
    what = f"{role} {name!r}"
    path = Path(name).expanduser()
    if not path.exists():
        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ConfigError(f"{what}: no such directory, and not a valid hub id either") from None
        return
    if not path.is_dir():
        raise ConfigError(f"{what} is a file; give the model's directory (config.json, weights, tokenizer)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{what}: the directory has no config.json, so it is not a saved model")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read config.json ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what}: config.json holds a {type(raw).__name__}, not an object")
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{what}: config.json is not a transformers config ({first_line(exc)})") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ConfigError(
            f"{what} is a {type(config).__name__} (model_type {config.model_type!r}), not a causal LM: "
            "teacher and reference must be next-token predictors (AutoModelForCausalLM)"
        )


def _load_failure(role: str, name_or_path: str | Path, what: str, exc: BaseException) -> ConfigError:
    name = str(name_or_path)
    where = "" if Path(name).expanduser().exists() else " (no such directory, so it was looked up as a hub id)"
    return ConfigError(f"{role} {name!r}: cannot load its {what}{where}: {first_line(exc)}")


def load_tokenizer(
    name_or_path: str | Path, revision: str | None = None, role: str = "model"
) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)
    # `tokenizers` raises a bare Exception on a corrupt tokenizer.json; transformers raises OSError,
    # ValueError, TypeError or KeyError depending on which file is missing or malformed.
    except Exception as exc:
        raise _load_failure(role, name_or_path, "tokenizer", exc) from None


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
    def load(
        cls,
        name_or_path: str | Path,
        *,
        dtype: torch.dtype,
        device: torch.device,
        revision: str | None = None,
        role: str = "model",
    ) -> ScoringModel:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(name_or_path), revision=revision, dtype=dtype, attn_implementation="sdpa"
            )
        except (OSError, ValueError) as exc:
            raise _load_failure(role, name_or_path, "weights", exc) from None
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
