"""Shared fixtures: tiny random-weight teacher/reference pairs built from configs (offline), the dtype
the dtype-sensitive tests run in, and skips for optional extras that are not installed.

`REWEIGH_TEST_DTYPE=auto|float32|bfloat16` (default auto) sets the dtype of the engines that the
`dtype`-marked tests build, so that a machine without native bf16 (where auto means fp32) still
exercises the bf16 path: `.ci/run` runs `pytest -m dtype` once forced to each. Tests that assert
exact parity pin float32 whatever this says.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from scoring.models import resolve_dtype
from tests.synthetic import build_tokenizer, save_random_llama

TEST_DTYPES = ("auto", "float32", "bfloat16")


def requested_dtype() -> str:
    name = os.environ.get("REWEIGH_TEST_DTYPE", "auto")
    if name not in TEST_DTYPES:
        raise pytest.UsageError(f"REWEIGH_TEST_DTYPE={name!r} is not one of {', '.join(TEST_DTYPES)}")
    return name


# How far a score (or a mean log-prob) of the tiny pair may move with the batch a document lands in,
# or between the service and a direct engine call, per resolved dtype. Measured on this project's
# AVX2 machine (bench/batch_invariance.py --tiny; tests/scoring/test_batch_dependence.py prints its own):
# - float32: reductions over another padded width change the last bits only: at most 1.3e-7 nats.
#   1e-5, the bound these tests always had, is kept: nothing is loosened for float32.
# - bfloat16: every matmul rounds to 8 mantissa bits (a relative step of 2^-8 = 0.4%), and which way a
#   value rounds depends on the kernel blocking that the batch's width picks: up to 5.1e-4 nats here
#   (emulated bf16) and 5.4e-4 on an AVX512-BF16 CPU (issue 9's live-test failure), against a score
#   spread of ~0.3 nats. 5e-3 leaves ~10x headroom and stays far below the score differences
#   that selection acts on.
BATCH_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-3}


@pytest.fixture(scope="session")
def engine_dtype() -> str:
    """The engine dtype option for dtype-sensitive tests (REWEIGH_TEST_DTYPE; default auto)."""
    return requested_dtype()


@pytest.fixture(scope="session")
def batch_tolerance(engine_dtype: str) -> float:
    """Absolute tolerance (nats) for a score compared across batch compositions, in engine_dtype."""
    return BATCH_TOLERANCE[resolve_dtype(engine_dtype, torch.device("cpu"))]


def pytest_report_header(config: pytest.Config) -> str:
    name = requested_dtype()
    return f"reweigh: REWEIGH_TEST_DTYPE={name} -> {resolve_dtype(name, torch.device('cpu'))} on CPU"


def pytest_runtest_setup(item: pytest.Item) -> None:
    # The Ray extra is optional (README: REWEIGH_EXTRAS=dev,ray): its tests skip, saying why, without it.
    if item.get_closest_marker("ray") and importlib.util.find_spec("ray") is None:
        pytest.skip("needs the optional Ray extra: .venv/bin/pip install -e '.[dev,ray]'")


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
