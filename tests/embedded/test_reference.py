"""Reference training: seeded, loadable with plain from_pretrained, retrained only when its inputs change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from embedded import reference
from embedded.corpus import Doc, write_jsonl_zst
from embedded.reference import ReferenceSpec, ensure_reference, train
from scoring.errors import ConfigError
from scoring.fingerprint import SOURCE_FILE

TINY = ReferenceSpec(
    layers=1, width=32, heads=2, intermediate=64, seq_len=32, batch_rows=2, train_tokens=32 * 2 * 4
)
TEXTS = [
    f"Document {i}: the teacher scores text, the reference learns the slice D_ref. " * 3 for i in range(12)
]


def test_training_is_seeded(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    first, figures = train(TEXTS, tiny_tokenizer, TINY, torch.device("cpu"))
    second, _ = train(TEXTS, tiny_tokenizer, TINY, torch.device("cpu"))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert figures["train_tokens"] == TINY.steps * TINY.tokens_per_step
    assert first.config.max_position_embeddings == TINY.seq_len  # the engine must not score longer windows


def test_spec_is_validated() -> None:
    with pytest.raises(ConfigError, match="width=30 is not divisible by heads=4"):
        ReferenceSpec(width=30, heads=4)
    with pytest.raises(ConfigError, match="less than one batch"):
        ReferenceSpec(train_tokens=10)


def test_ensure_reference_trains_once_and_loads_plainly(
    tmp_path: Path, tiny_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher_dir, _ = tiny_pair
    ref_file = tmp_path / "ref.jsonl.zst"
    write_jsonl_zst([Doc(f"t:{i}#0", t, "t") for i, t in enumerate(TEXTS)], ref_file, level=3)
    out = ensure_reference(teacher_dir, [ref_file], tmp_path / "reference", TINY)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 1
    assert json.loads((out / SOURCE_FILE).read_text())["kind"] == "trained"

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date reference was retrained")

    monkeypatch.setattr(reference, "train", must_not_train)
    assert ensure_reference(teacher_dir, [ref_file], out, TINY) == out
