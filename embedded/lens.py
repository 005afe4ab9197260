"""The `teacher-lens` reference: the teacher's first layers read out through a fitted linear map.

A "tuned lens" (Belrose et al. 2023, arXiv:2303.08112): the residual stream after the teacher's first
`k` layers, put through the teacher's own final norm and a d x d map `M`, then the teacher's frozen
(tied) embedding matrix `E` as head. Without `M` (the logit lens) early layers give logits worse than
uniform; with it, the slice is a weaker version of the teacher that finds easy the text the teacher
finds easy: what MiniPLM's reference must do.

How `M` is fitted: by ridge regression of the teacher's own final (normed) state on the slice's
normed state at layer `k`, over every position of the fit blocks: one teacher forward pass and a
d x d solve, closed form, so the result is exact and seeded by the data alone. It distils what the
teacher's remaining layers do into one linear map. (An earlier version fitted `M` by next-token
cross-entropy with AdamW; at 4 layers it agreed less with the teacher (Spearman 0.20 against 0.26
here) and needed the 49k-wide head's backward pass at every step.)

Why `M` sits after the norm: logits = E · M · norm(h) = (E M) · norm(h), so the map folds exactly into
an untied LM head `E M`. The reference is then a plain `LlamaForCausalLM` (k layers, untied head) that
loads with `from_pretrained` and scores through the same path as any model.

Why noise may be mixed into the fit (`ReferenceSpec.noise_share`): fitted on clean text only, the map
extrapolates on garbage into confident wrong guesses, the reference finds noise harder than the
teacher, and the difference score then rewards noise. MiniPLM's D_ref is a slice of the same noisy
corpus; where D_ref is clean, noisy copies of it (embedded/noise.py) stand in for that.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from scoring.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from embedded.reference import ReferenceSpec

log = logging.getLogger(__name__)


def decoder_layers(model: PreTrainedModel, keep: int) -> int:
    """How many decoder layers `model` has; refuses a model that has no list of them, or `keep` >= that."""
    stack = model.base_model.layers
    if not isinstance(stack, torch.nn.ModuleList):
        raise ConfigError(f"the teacher has no list of decoder layers to cut ({type(stack).__name__})")
    if keep >= len(stack):
        raise ConfigError(f"layers={keep} cuts nothing from a teacher of {len(stack)} layers")
    return len(stack)


def cut_bottom(model: PreTrainedModel, layers: int) -> None:
    """Keep the first `layers` decoder layers of `model`, in place."""
    trunk = model.base_model
    stack = trunk.layers
    assert isinstance(stack, torch.nn.ModuleList)  # decoder_layers checked it
    trunk.layers = torch.nn.ModuleList(stack[:layers])
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = model.config.layer_types[:layers]


@torch.inference_mode()
def normal_equations(
    model: PreTrainedModel, blocks: torch.Tensor, layers: int, device: torch.device, rows: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """(XᵀX, XᵀY) in float64 over every position of `blocks`: X the state after `layers` decoder layers
    put through the final norm, Y the model's own final normed state (what its head reads)."""
    width = int(model.config.hidden_size)
    norm = model.base_model.norm
    assert isinstance(norm, torch.nn.Module)
    xtx = torch.zeros(width, width, dtype=torch.float64, device=device)
    xty = torch.zeros_like(xtx)
    for i in range(0, len(blocks), rows):
        out = model.base_model(input_ids=blocks[i : i + rows].to(device), output_hidden_states=True, use_cache=False)
        x = norm(out.hidden_states[layers]).reshape(-1, width).double()
        y = out.last_hidden_state.reshape(-1, width).double()
        xtx += x.T @ x
        xty += x.T @ y
    return xtx, xty


def ridge_map(xtx: torch.Tensor, xty: torch.Tensor, ridge: float) -> torch.Tensor:
    """`M` minimising ‖X Mᵀ − Y‖² + λ‖M − I‖², with λ = `ridge` × the mean of XᵀX's diagonal (so the
    penalty does not depend on how many positions were summed): the identity (the logit lens) is
    what the map shrinks toward where the data say little."""
    eye = torch.eye(len(xtx), dtype=xtx.dtype, device=xtx.device)
    lam = ridge * float(xtx.diagonal().mean())
    return torch.linalg.solve(xtx + lam * eye, xty + lam * eye).T.float()


def fold_head(model: PreTrainedModel, mapping: torch.Tensor) -> None:
    """Give `model` an untied head `E M`: its logits become E · M · norm(h) with E its input embeddings."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise ConfigError(f"the teacher's head is {type(head).__name__}, not a bias-free Linear: no lens can fold into it")
    head.weight = torch.nn.Parameter(embedding.detach() @ mapping.to(embedding.dtype))
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):  # composite configs keep the flag on the text part
        model.config.get_text_config().tie_word_embeddings = False


def build_lens(teacher_dir: Path, fit_blocks: torch.Tensor, spec: ReferenceSpec, device: torch.device) -> PreTrainedModel:
    """The teacher cut to `spec.layers` layers, with the map fitted on `fit_blocks` folded into an untied head."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    torch.nn.Module.to(model, device)
    model.eval().requires_grad_(False)
    total = decoder_layers(model, spec.layers)
    started = time.monotonic()
    xtx, xty = normal_equations(model, fit_blocks, spec.layers, device)
    log.info(
        "lens: %d blocks of %d tokens through the teacher (%d layers) in %.0f s",
        len(fit_blocks),
        fit_blocks.shape[1],
        total,
        time.monotonic() - started,
    )
    cut_bottom(model, spec.layers)
    model.config.max_position_embeddings = spec.seq_len
    fold_head(model, ridge_map(xtx, xty, spec.ridge).to(device))
    return model
