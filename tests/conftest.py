"""Shared fixtures: tiny random-weight teacher/reference pairs built from configs (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import build_tokenizer, save_random_llama


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> tuple[Path, Path]:
    """(teacher_dir, reference_dir): same tokenizer, different sizes and seeds, 256-token context."""
    root = tmp_path_factory.mktemp("tiny_pair")
    teacher = save_random_llama(root / "teacher", tiny_tokenizer, hidden_size=64, num_layers=2, seed=1)
    reference = save_random_llama(root / "reference", tiny_tokenizer, hidden_size=32, num_layers=1, num_heads=2, seed=2)
    return teacher, reference


@pytest.fixture(scope="session")
def other_tokenizer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose tokenizer differs from tiny_pair's (for vocabulary-mismatch tests)."""
    root = tmp_path_factory.mktemp("other")
    tok = build_tokenizer(vocab_size=300, extra_text="zzz qqq xxyyzz " * 50)
    return save_random_llama(root / "other", tok, hidden_size=32, num_layers=1, num_heads=2, seed=3)
