"""The pure score function against a plain full log_softmax computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scoring.logprobs import sum_per_row, target_logprobs


def _by_hand(hidden, weight, bias, targets, mask, scale=None, cap=None):
    logits = hidden.double() @ weight.double().T + (bias.double() if bias is not None else 0)
    if scale is not None:
        logits = logits * scale
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    logp = torch.log_softmax(logits, dim=-1).gather(2, targets[..., None]).squeeze(2)
    return [float(logp[b][mask[b]].sum()) for b in range(hidden.shape[0])]


@pytest.mark.parametrize("scale, cap", [(None, None), (0.5, None), (None, 3.0), (2.0, 5.0)])
@pytest.mark.parametrize("chunk_tokens", [1, 5, 1000])
def test_target_logprobs_equal_full_log_softmax(scale, cap, chunk_tokens):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 16, generator=gen)
    weight = torch.randn(50, 16, generator=gen)
    bias = torch.randn(50, generator=gen)
    targets = torch.randint(0, 50, (3, 9), generator=gen)
    mask = torch.rand(3, 9, generator=gen) > 0.3
    values, rows = target_logprobs(hidden, weight, targets, mask, chunk_tokens=chunk_tokens, head_bias=bias,
                                   logit_scale=scale, logit_softcap=cap)
    assert values.dtype == torch.float32 and values.numel() == int(mask.sum())
    assert torch.equal(rows, mask.nonzero(as_tuple=True)[0])
    got = sum_per_row(values, rows, 3)
    np.testing.assert_allclose(got, _by_hand(hidden, weight, bias, targets, mask, scale, cap), atol=1e-4)


def test_bf16_hidden_states_give_fp32_logprobs_close_to_fp32():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 7, 32, generator=gen)
    weight = torch.randn(64, 32, generator=gen) * 0.2
    targets = torch.randint(0, 64, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.bool)
    fp32, _ = target_logprobs(hidden, weight, targets, mask, chunk_tokens=4)
    bf16, _ = target_logprobs(hidden.bfloat16(), weight.bfloat16(), targets, mask, chunk_tokens=4)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.1, rtol=0.02)
