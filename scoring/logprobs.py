"""The pure score computation: final hidden states -> per-token target log-probs, chunked over the vocab.

Nothing here loads a model or touches a file, so it is tested against a plain full log_softmax.
Peak memory is `chunk_tokens x vocab` fp32 logits (plus the matmul output in the model dtype), never
`batch x length x vocab`: with Qwen's 151,936-entry vocabulary a 16k-token batch of full fp32 logits
would be 10 GB; 256-token chunks are 155 MB.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def target_logprobs(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    targets: torch.Tensor,
    target_mask: torch.Tensor,
    *,
    chunk_tokens: int,
    head_bias: torch.Tensor | None = None,
    logit_softcap: float | None = None,
    logit_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the counted targets.

    hidden: [B, T, H] final hidden states (after the model's final norm); head_weight: [V, H];
    targets: [B, T] the token each position predicts; target_mask: [B, T] bool, which predictions count.
    Returns (logprob_per_target [N] float32, row_per_target [N] int64), N = target_mask.sum(), in
    row-major order, so rows are non-decreasing.
    """
    rows, cols = target_mask.nonzero(as_tuple=True)
    values = picked_logprobs(
        hidden[rows, cols],
        head_weight,
        targets[rows, cols],
        chunk_tokens=chunk_tokens,
        head_bias=head_bias,
        logit_softcap=logit_softcap,
        logit_scale=logit_scale,
    )
    return values, rows


def picked_logprobs(
    picked_hidden: torch.Tensor,
    head_weight: torch.Tensor,
    picked_targets: torch.Tensor,
    *,
    chunk_tokens: int,
    head_bias: torch.Tensor | None = None,
    logit_softcap: float | None = None,
    logit_scale: float | None = None,
) -> torch.Tensor:
    """`target_logprobs` once the counted positions are gathered: picked_hidden [N, H], picked_targets [N].

    Split out so a caller that already knows the counted positions on the host (the engine does: it
    built the mask) never asks the device for `nonzero`, which would wait for the GPU every batch.
    """
    n = picked_targets.numel()
    out = torch.empty(n, dtype=torch.float32, device=picked_hidden.device)
    for start in range(0, n, chunk_tokens):
        stop = min(start + chunk_tokens, n)
        logits = F.linear(picked_hidden[start:stop], head_weight, head_bias)
        if logit_scale is not None or logit_softcap is not None:
            logits = logits.float()
            if logit_scale is not None:
                logits = logits * logit_scale
            if logit_softcap is not None:
                logits = torch.tanh(logits / logit_softcap) * logit_softcap
        # log_softmax is one fused kernel that works row by row in cache and upcasts to fp32 inside;
        # `chosen - logsumexp(logits)` made six passes over the chunk (max, subtract, exp, sum, ...),
        # and `.float()` of bf16 logits one more copy of it.
        logprobs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
        out[start:stop] = logprobs.gather(1, picked_targets[start:stop, None]).squeeze(1)
        del logits, logprobs
    return out


def sum_per_row(values: torch.Tensor | np.ndarray, rows: torch.Tensor | np.ndarray, n_rows: int) -> np.ndarray:
    """Float64 sums of `values` grouped by `rows` (non-decreasing), in a fixed order on any device.

    Summation happens on the CPU in float64 so results do not depend on atomics or thread counts.
    """
    sums = np.zeros(n_rows, dtype=np.float64)
    vals = values.detach().to("cpu", torch.float64).numpy() if isinstance(values, torch.Tensor) else values.astype(np.float64)
    if vals.size == 0:
        return sums
    row_ids = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else rows
    starts = np.flatnonzero(np.r_[True, row_ids[1:] != row_ids[:-1]])
    sums[row_ids[starts]] = np.add.reduceat(vals, starts)
    return sums
