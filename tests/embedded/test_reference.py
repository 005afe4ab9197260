"""Reference training: seeded, loadable with plain from_pretrained, retrained only when its inputs change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from embedded import reference
from embedded.corpus import Doc, write_jsonl_zst
from embedded.lens import ridge_map
from embedded.reference import ReferenceSpec, ensure_reference, lens_blocks, token_stream, train
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


CUT = ReferenceSpec(init="teacher-cut", layers=1, adapt_layers=1, seq_len=32, batch_rows=2, train_tokens=32 * 2 * 4)


def test_teacher_cut_keeps_the_teachers_bottom_and_adapts_only_the_top(
    tmp_path: Path, tiny_pair: tuple[Path, Path], tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    teacher_dir, _ = tiny_pair
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    first, figures = train(TEXTS, tiny_tokenizer, CUT, torch.device("cpu"), teacher_dir=teacher_dir)
    second, _ = train(TEXTS, tiny_tokenizer, CUT, torch.device("cpu"), teacher_dir=teacher_dir)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded
    assert first.config.num_hidden_layers == 1 and first.config.hidden_size == teacher.config.hidden_size
    # embeddings (tied with the head) are the teacher's, untouched; the adapted layer moved
    assert torch.equal(first.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    moved = first.model.layers[0].mlp.down_proj.weight
    assert not torch.equal(moved, teacher.model.layers[0].mlp.down_proj.weight)
    assert figures["train_tokens"] == CUT.steps * CUT.tokens_per_step


def test_teacher_cut_as_is_equals_the_teachers_layers(
    tiny_pair: tuple[Path, Path], tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    teacher_dir, _ = tiny_pair
    spec = ReferenceSpec(init="teacher-cut", layers=1, adapt_layers=0, train_tokens=0, seq_len=32, batch_rows=2)
    model, figures = train(TEXTS, tiny_tokenizer, spec, torch.device("cpu"), teacher_dir=teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    for name, value in model.state_dict().items():
        assert torch.equal(value, teacher.state_dict()[name]), name
    assert figures["train_tokens"] == 0 and figures["val_loss"] > 0


def test_ensure_reference_records_the_teacher_for_a_cut(tmp_path: Path, tiny_pair: tuple[Path, Path]) -> None:
    teacher_dir, _ = tiny_pair
    ref_file = tmp_path / "ref.jsonl.zst"
    write_jsonl_zst([Doc(f"t:{i}#0", t, "t") for i, t in enumerate(TEXTS)], ref_file, level=3)
    out = ensure_reference(teacher_dir, [ref_file], tmp_path / "reference", CUT)
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["kind"] == "teacher-cut" and len(source["teacher_weights_sha256"]) == 64
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 1


def test_cut_spec_is_validated(tiny_pair: tuple[Path, Path], tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ConfigError, match="adapt_layers=3 must lie in"):
        ReferenceSpec(init="teacher-cut", layers=2, adapt_layers=3)
    with pytest.raises(ConfigError, match="only init='teacher-cut' may skip training"):
        ReferenceSpec(train_tokens=0)
    spec = ReferenceSpec(init="teacher-cut", layers=2, adapt_layers=0, train_tokens=0, seq_len=32, batch_rows=2)
    with pytest.raises(ConfigError, match="cuts nothing from a teacher of 2 layers"):
        train(TEXTS, tiny_tokenizer, spec, torch.device("cpu"), teacher_dir=tiny_pair[0])


def test_teacher_cut_with_top_layers_skips_the_middle(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    from tests.synthetic import save_random_llama

    teacher_dir = save_random_llama(tmp_path / "teacher", tiny_tokenizer, hidden_size=32, num_layers=4, num_heads=2, seed=7)
    spec = ReferenceSpec(
        init="teacher-cut", layers=1, top_layers=1, adapt_layers=0, train_tokens=0, seq_len=32, batch_rows=2
    )
    model, _ = train(TEXTS, tiny_tokenizer, spec, torch.device("cpu"), teacher_dir=teacher_dir)
    model.save_pretrained(tmp_path / "cut")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "cut")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    assert reloaded.config.num_hidden_layers == 2
    for mine, theirs in ((0, 0), (1, 3)):  # the bottom layer, then the teacher's last one
        a, b = reloaded.model.layers[mine].state_dict(), teacher.model.layers[theirs].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="top_layers=1: only a teacher cut"):
        ReferenceSpec(top_layers=1)


LENS = ReferenceSpec(init="teacher-lens", layers=1, seq_len=32, train_tokens=32 * 8)


def test_ridge_map_recovers_a_known_map_and_shrinks_toward_the_identity() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=generator, dtype=torch.float64)
    known = torch.randn(8, 8, generator=generator, dtype=torch.float64)
    y = x @ known.T  # y = M x for every row
    torch.testing.assert_close(ridge_map(x.T @ x, x.T @ y, ridge=1e-9).double(), known, atol=1e-5, rtol=1e-5)
    # with an overwhelming penalty the map stays the identity: the logit lens
    torch.testing.assert_close(ridge_map(x.T @ x, x.T @ y, ridge=1e9).double(), torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)


def test_teacher_lens_is_the_teachers_bottom_with_a_fitted_head_folded_in(
    tmp_path: Path, tiny_pair: tuple[Path, Path], tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    teacher_dir, _ = tiny_pair
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    first, figures = train(TEXTS, tiny_tokenizer, LENS, torch.device("cpu"), teacher_dir=teacher_dir)
    second, _ = train(TEXTS, tiny_tokenizer, LENS, torch.device("cpu"), teacher_dir=teacher_dir)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded
    assert "train_loss" not in figures and figures["train_tokens"] == 32 * 8  # solved, not trained
    # the bottom layer, embeddings and norm are the teacher's; only the (now untied) head changed
    assert first.config.num_hidden_layers == 1 and not first.config.tie_word_embeddings
    kept = first.model.layers[0].state_dict()
    assert all(torch.equal(v, teacher.model.layers[0].state_dict()[k]) for k, v in kept.items())
    embedding = teacher.get_input_embeddings().weight
    assert torch.equal(first.get_input_embeddings().weight, embedding)
    assert torch.equal(first.model.norm.weight, teacher.model.norm.weight)
    head = first.get_output_embeddings().weight
    assert not torch.equal(head, embedding)
    # the head is exactly E M for some d x d map M: solving for M reproduces it
    mapping = torch.linalg.lstsq(embedding, head).solution
    torch.testing.assert_close(embedding @ mapping, head, atol=1e-4, rtol=1e-4)
    # that M (the state is M x: x @ Mᵀ for rows) carries the teacher's layer-1 state (normed) closer to its final state than the identity
    # (the logit lens) does, over the D_ref text: the regression, with the right layer and orientation
    ids = torch.tensor(token_stream(TEXTS, tiny_tokenizer, int(tiny_tokenizer.bos_token_id or 0))[: 32 * 40]).view(40, 32)
    with torch.inference_mode():
        out = teacher.model(input_ids=ids, output_hidden_states=True)
        x, y = teacher.model.norm(out.hidden_states[1]), out.last_hidden_state
        fitted, identity = float(((x @ mapping.detach().T - y) ** 2).mean()), float(((x - y) ** 2).mean())
    assert fitted < 0.8 * identity


def test_lens_fit_blocks_mix_in_the_asked_share_of_noise(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    spec = ReferenceSpec(init="teacher-lens", layers=1, seq_len=16, train_tokens=16 * 9, noise_share=1 / 3)
    train_blocks = torch.arange(20 * 16).view(20, 16)  # stand-ins: every clean block is recognisable
    draw = [lens_blocks(train_blocks, TEXTS, tiny_tokenizer, spec, 0, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(draw[0], draw[1])  # seeded
    is_clean = [any(torch.equal(row, block) for block in train_blocks) for row in draw[0]]
    assert draw[0].shape == (9, 16) and sum(is_clean) == 6  # 9 blocks, a third of them noisy
    clean_only = lens_blocks(train_blocks, TEXTS, tiny_tokenizer, LENS, 0, torch.Generator().manual_seed(0))
    assert len(clean_only) == 8 and all(any(torch.equal(r, b) for b in train_blocks) for r in clean_only)


def test_teacher_lens_saves_and_loads_as_a_plain_causal_lm(tmp_path: Path, tiny_pair: tuple[Path, Path]) -> None:
    from scoring.models import ScoringModel

    teacher_dir, _ = tiny_pair
    ref_file = tmp_path / "ref.jsonl.zst"
    write_jsonl_zst([Doc(f"t:{i}#0", t, "t") for i, t in enumerate(TEXTS)], ref_file, level=3)
    out = ensure_reference(teacher_dir, [ref_file], tmp_path / "reference", LENS)
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["kind"] == "teacher-lens" and len(source["teacher_weights_sha256"]) == 64
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    # the untied head survives the round trip (a re-tie would silently undo the lens)
    assert not torch.equal(reloaded.get_output_embeddings().weight, reloaded.get_input_embeddings().weight)
    assert torch.equal(reloaded.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    ScoringModel.load(out, dtype=torch.float32, device=torch.device("cpu"))  # refuses a head it cannot chunk


def test_lens_spec_is_validated(tiny_pair: tuple[Path, Path], tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ConfigError, match="train_tokens=0 leaves a teacher-lens reference untrained"):
        ReferenceSpec(init="teacher-lens", train_tokens=0)
    with pytest.raises(ConfigError, match="less than one block of seq_len=32 to fit the lens on"):
        ReferenceSpec(init="teacher-lens", seq_len=32, train_tokens=31)
    assert ReferenceSpec(init="teacher-lens", seq_len=32, train_tokens=32 * 3).fit_blocks == 3  # batch_rows is not read
    with pytest.raises(ConfigError, match="a teacher lens keeps only the bottom layers"):
        ReferenceSpec(init="teacher-lens", top_layers=1)
    with pytest.raises(ConfigError, match="needs the teacher's directory"):
        train(TEXTS, tiny_tokenizer, LENS, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"noise_share=1.0 must lie in \[0, 1\)"):
        ReferenceSpec(init="teacher-lens", noise_share=1.0)
    with pytest.raises(ConfigError, match="only a teacher-lens reference mixes noise"):
        ReferenceSpec(noise_share=0.1)
    with pytest.raises(ConfigError, match=r"ridge=0\.0 must be positive"):
        ReferenceSpec(init="teacher-lens", ridge=0.0)
    spec = ReferenceSpec(init="teacher-lens", layers=2, seq_len=32, batch_rows=2, train_tokens=64)
    with pytest.raises(ConfigError, match="cuts nothing from a teacher of 2 layers"):
        train(TEXTS, tiny_tokenizer, spec, torch.device("cpu"), teacher_dir=tiny_pair[0])
