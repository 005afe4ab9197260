"""Bucketed, batched, chunked scores equal a plain per-document computation with a full log_softmax."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scoring import EngineConfig, ScoringEngine
from scoring.batching import document_windows


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = "the of model token data teacher reference kernel python psalm 42 x=y+1 (é) 漢字".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def _plain_mean_logprob(model, ids: list[int], context_id: int) -> float:
    """What a user would write: one document, full logits, full log_softmax (fits in one window)."""
    seq = torch.tensor([[context_id, *ids]])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq).logits.float()[0, :-1], dim=-1)
    return float(logp.gather(1, seq[0, 1:, None]).mean())


@pytest.fixture(scope="module")
def plain(tiny_pair):
    teacher_dir, reference_dir = tiny_pair
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    t = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    r = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32).eval()
    return tok, t, r


def test_batched_chunked_scores_equal_per_document_full_softmax(tiny_pair, plain):
    tok, t_model, r_model = plain
    texts = _random_texts(40, seed=0)
    # A small budget and chunk force many batches of mixed lengths and many vocab chunks.
    engine = ScoringEngine.from_pretrained(
        *tiny_pair, EngineConfig(dtype="float32", max_length=256, token_budget=512, logits_chunk_tokens=7)
    )
    scores = engine.score(texts)
    assert engine.stats.batches > 3
    for text, s in zip(texts, scores, strict=True):
        ids = tok(text, add_special_tokens=False).input_ids
        assert s.status == "ok" and s.n_tokens == len(ids)
        t = _plain_mean_logprob(t_model, ids, tok.bos_token_id)
        r = _plain_mean_logprob(r_model, ids, tok.bos_token_id)
        assert s.teacher_logprob == pytest.approx(t, abs=1e-4)
        assert s.reference_logprob == pytest.approx(r, abs=1e-4)
        assert s.score == pytest.approx(t - r, abs=1e-4)
    # The scores must actually differ between documents, or parity would prove little.
    assert len({round(s.score, 3) for s in scores}) > 10


def test_long_document_windows_equal_hand_computation(tiny_pair, plain):
    tok, t_model, _ = plain
    text = " ".join(_random_texts(30, seed=1))
    ids = tok(text, add_special_tokens=False).input_ids
    max_length, overlap = 48, 16
    assert len(ids) > 4 * max_length
    engine = ScoringEngine.from_pretrained(
        *tiny_pair, EngineConfig(dtype="float32", max_length=max_length, window_overlap=overlap, token_budget=96)
    )
    [s] = engine.score([text])

    # By hand: window 0 reads [bos] + x[0:47] and counts all 48 predictions; each later window
    # re-reads the last 16 positions of the previous one and counts only what follows.
    seq = [tok.bos_token_id, *ids]
    total, counted_until = 0.0, 0
    while counted_until < len(ids):
        start = 0 if counted_until == 0 else counted_until - overlap
        stop = min(start + max_length, len(ids))
        inp = torch.tensor([seq[start:stop]])
        with torch.no_grad():
            logp = torch.log_softmax(t_model(inp).logits.float()[0], dim=-1)
        targets = torch.tensor(seq[start + 1 : stop + 1])
        per_pos = logp.gather(1, targets[:, None]).squeeze(1)
        total += float(per_pos[counted_until - start :].double().sum())
        counted_until = stop
    assert s.n_tokens == len(ids)
    assert s.teacher_logprob == pytest.approx(total / len(ids), abs=1e-4)


def test_windows_count_every_token_once():
    for n in range(1, 60):
        for max_length, overlap in ((8, 0), (8, 3), (8, 7), (5, 2)):
            windows = document_windows(0, list(range(100, 100 + n)), 1, max_length, overlap)
            counted = [t for w in windows for t in w.targets[w.skip :]]
            assert counted == list(range(100, 100 + n))
            assert all(len(w.input_ids) <= max_length for w in windows)
            assert all(w.input_ids[1:] == w.targets[:-1] for w in windows)


def test_results_in_input_order_and_deterministic(tiny_pair):
    texts = _random_texts(25, seed=2)
    config = EngineConfig(dtype="float32", token_budget=300)
    a = ScoringEngine.from_pretrained(*tiny_pair, config).score(texts)
    b = ScoringEngine.from_pretrained(*tiny_pair, config).score(list(reversed(texts)))
    assert [x.score for x in a] == [x.score for x in reversed(b)] or all(
        abs(x.score - y.score) < 1e-5 for x, y in zip(a, reversed(b), strict=True)
    )
    c = ScoringEngine.from_pretrained(*tiny_pair, config).score(texts)
    assert a == c  # same inputs, same models: bit-identical


def test_bf16_scores_close_to_fp32(tiny_pair):
    texts = _random_texts(10, seed=3)
    fp32 = ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="float32")).score(texts)
    bf16_engine = ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="bfloat16"))
    assert bf16_engine.fingerprint.dtype == "bfloat16"
    bf16 = bf16_engine.score(texts)
    for x, y in zip(fp32, bf16, strict=True):
        assert y.teacher_logprob == pytest.approx(x.teacher_logprob, abs=0.15)
