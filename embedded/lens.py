"""The `teacher-lens` reference: the teacher's first layers read out through a trained linear map.

A "tuned lens" (Belrose et al. 2023, arXiv:2303.08112): the residual stream after the teacher's first
`k` layers, put through the teacher's own final norm and a learnt d x d map `M`, then the teacher's
frozen (tied) embedding matrix `E` as head. Without `M` (the logit lens) the early layers of a small
model give logits worse than uniform; with it they give a weak version of the teacher, which finds
easy the text the teacher finds easy: what MiniPLM's reference must do.

Why `M` sits after the norm: logits = E · M · norm(h) = (E M) · norm(h), so the map folds exactly into
an untied LM head `E M`. The reference is then a plain `LlamaForCausalLM` (k layers, untied head) that
loads with `from_pretrained` and scores through the same path as any model.

Why it is cheap: the k frozen layers run once over the training slice; each step is then only the
head's forward and backward over cached features. The loss is convex in `M` (a softmax regression on
fixed features), so a few hundred steps from the identity suffice and the result does not hinge on
the seed. `M` starts at the identity (the logit lens) and is not decayed toward zero.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from scoring.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from embedded.reference import ReferenceSpec

log = logging.getLogger(__name__)

LrSchedule = Callable[[int, "ReferenceSpec"], float]


def cut_bottom(model: PreTrainedModel, layers: int) -> None:
    """Keep the first `layers` decoder layers of `model`, in place."""
    trunk = model.base_model
    stack = trunk.layers
    if not isinstance(stack, torch.nn.ModuleList):
        raise ConfigError(f"the teacher has no list of decoder layers to cut ({type(stack).__name__})")
    if layers >= len(stack):
        raise ConfigError(f"layers={layers} cuts nothing from a teacher of {len(stack)} layers")
    trunk.layers = torch.nn.ModuleList(stack[:layers])
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = model.config.layer_types[:layers]


@torch.inference_mode()
def features(model: PreTrainedModel, blocks: torch.Tensor, device: torch.device, rows: int = 8) -> torch.Tensor:
    """The final-norm output of `model`'s trunk for every position of `blocks` (what the head reads)."""
    out = [
        model.base_model(input_ids=blocks[i : i + rows].to(device), use_cache=False).last_hidden_state
        for i in range(0, len(blocks), rows)
    ]
    return torch.cat(out).float()


def fit_map(
    feats: torch.Tensor,
    blocks: torch.Tensor,
    embedding: torch.Tensor,
    spec: ReferenceSpec,
    generator: torch.Generator,
    lr_at: LrSchedule,
) -> tuple[torch.Tensor, float]:
    """Train `M` (identity start) so that softmax(E M f) predicts the next token; returns (M, last loss).

    `feats[b, t]` predicts `blocks[b, t + 1]`. Batches of `spec.batch_rows` blocks are drawn in a
    seeded order, one pass after another, for `spec.steps` steps; `lr_at(step, spec)` gives the rate.
    """
    width = embedding.shape[1]
    mapping = torch.nn.Parameter(torch.eye(width, dtype=torch.float32, device=embedding.device))
    optimizer = torch.optim.AdamW([mapping], lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.0)
    inputs, targets = feats[:, :-1], blocks[:, 1:].to(embedding.device)
    started, loss_value = time.monotonic(), float("nan")
    cursor, order = 0, torch.randperm(len(blocks), generator=generator)
    for step in range(spec.steps):
        if cursor + spec.batch_rows > len(order):
            cursor, order = 0, torch.randperm(len(blocks), generator=generator)
        rows = order[cursor : cursor + spec.batch_rows]
        cursor += spec.batch_rows
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        logits = (inputs[rows] @ mapping.T) @ embedding.T
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[rows].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        if step % max(1, spec.steps // 10) == 0 or step == spec.steps - 1:
            elapsed = time.monotonic() - started
            log.info(
                "lens step %d/%d loss %.3f (%.0f tokens/s)",
                step + 1,
                spec.steps,
                loss_value,
                (step + 1) * spec.tokens_per_step / max(elapsed, 1e-9),
            )
    return mapping.detach(), loss_value


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


def build_lens(
    teacher_dir: Path,
    train_blocks: torch.Tensor,
    spec: ReferenceSpec,
    device: torch.device,
    generator: torch.Generator,
    lr_at: LrSchedule,
) -> tuple[PreTrainedModel, float]:
    """The teacher cut to `spec.layers` layers, with the fitted map folded into an untied head."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    cut_bottom(model, spec.layers)
    model.config.max_position_embeddings = spec.seq_len
    torch.nn.Module.to(model, device)
    model.eval().requires_grad_(False)
    # Only the blocks the steps will visit are run through the layers: one pass covers them all.
    needed = min(len(train_blocks), spec.steps * spec.batch_rows)
    used = train_blocks[torch.randperm(len(train_blocks), generator=generator)[:needed]]
    started = time.monotonic()
    feats = features(model, used, device)
    log.info("lens: %d blocks through %d teacher layers in %.0f s", needed, spec.layers, time.monotonic() - started)
    embedding = model.get_input_embeddings().weight
    assert isinstance(embedding, torch.Tensor)
    mapping, loss = fit_map(feats, used, embedding.detach(), spec, generator, lr_at)
    fold_head(model, mapping)
    return model, loss
