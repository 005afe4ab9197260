"""The CUDA path against the CPU: skipped cleanly where torch sees no CUDA device.

On a CUDA machine every engine test in tests/scoring runs on the GPU too (`device="auto"` picks it);
these compare the two devices directly and drive the pipelined (one batch behind) result fetch
through many batches.
"""

from __future__ import annotations

import pytest
import torch

from scoring import EngineConfig, ScoringEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TEXTS = [" ".join(["the teacher reads every token"] * n) + f" {n}" for n in range(1, 40)]


def _scores(pair, **config):
    engine = ScoringEngine.from_pretrained(*pair, EngineConfig(max_length=64, window_overlap=16, **config))
    return engine, engine.score(TEXTS)


def test_cuda_fp32_equals_cpu_fp32_across_many_batches(tiny_pair):
    _, cpu = _scores(tiny_pair, device="cpu", dtype="float32", token_budget=128)
    engine, gpu = _scores(tiny_pair, device="cuda", dtype="float32", token_budget=128)
    assert engine.fingerprint.device_type == "cuda" and engine.stats.batches > 5
    for c, g in zip(cpu, gpu, strict=True):
        assert g.n_tokens == c.n_tokens
        assert g.teacher_logprob == pytest.approx(c.teacher_logprob, abs=1e-4)
        assert g.score == pytest.approx(c.score, abs=1e-4)


def test_cuda_bf16_close_to_cpu_fp32_and_deterministic(tiny_pair):
    _, cpu = _scores(tiny_pair, device="cpu", dtype="float32")
    _, first = _scores(tiny_pair, device="cuda", dtype="bfloat16")
    _, again = _scores(tiny_pair, device="cuda", dtype="bfloat16")
    assert first == again
    for c, g in zip(cpu, first, strict=True):
        assert g.teacher_logprob == pytest.approx(c.teacher_logprob, abs=0.15)


def test_token_budget_does_not_change_cuda_scores_beyond_tolerance(tiny_pair):
    _, small = _scores(tiny_pair, device="cuda", dtype="float32", token_budget=64)
    _, large = _scores(tiny_pair, device="cuda", dtype="float32", token_budget=4096)
    for a, b in zip(small, large, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)
