"""Bad and odd inputs: a clear error or a per-row reason, never a crash, NaN or silent drop."""

from __future__ import annotations

import math

import pytest

from scoring import STATUS_BLANK, STATUS_EMPTY, EngineConfig, ScoringEngine
from scoring.errors import ConfigError, VocabularyMismatchError


@pytest.fixture(scope="module")
def engine(tiny_pair):
    return ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="float32"))


def test_empty_and_whitespace_texts_have_reasons(engine):
    out = engine.score(["", "   \n\t", "real text"])
    assert out[0].status == STATUS_EMPTY and out[0].score is None and out[0].n_tokens == 0
    assert out[1].status == STATUS_BLANK and out[1].score is None
    assert out[2].ok and math.isfinite(out[2].score)


def test_non_string_is_refused_naming_the_position(engine):
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        engine.score(["a", 3])  # type: ignore[list-item]


def test_vocabulary_mismatch_names_both_tokenizers(tiny_pair, other_tokenizer_model):
    teacher, _ = tiny_pair
    with pytest.raises(VocabularyMismatchError) as info:
        ScoringEngine.from_pretrained(teacher, other_tokenizer_model)
    message = str(info.value)
    assert str(teacher) in message and str(other_tokenizer_model) in message


def test_bad_settings_name_the_values(tiny_pair):
    with pytest.raises(ConfigError, match="max_length=4096"):
        ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(max_length=4096))
    with pytest.raises(ValueError, match="window_overlap=64"):
        EngineConfig(max_length=64, window_overlap=64)
    with pytest.raises(ValueError, match="device='gpu'"):
        EngineConfig(device="gpu")


def test_missing_model_directory_is_a_clear_error(tmp_path, tiny_pair):
    with pytest.raises((ConfigError, OSError), match="nothing-here"):
        ScoringEngine.from_pretrained(tmp_path / "nothing-here", tiny_pair[1])
