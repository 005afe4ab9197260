"""Random-weight model pairs built from configs, for tests and benchmarks (never downloaded; not shipped).

The tokenizer is a small byte-level BPE trained on the fly, so every byte string is encodable and the
pair shares a vocabulary exactly as MiniPLM requires of a real teacher and reference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

_SEED_TEXT = (
    "The quick brown fox jumps over the lazy dog. A teacher model and a reference model score each "
    "document; the difference of their mean token log-probabilities decides what a student reads. "
    "Kernel documentation, Python tutorials, plays and psalms: real text is varied and long. "
    "0123456789 +-*/=()[]{}<>,.;:!?'\" \n\t"
)

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def build_tokenizer(vocab_size: int = 384, extra_text: str = "") -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE tokenizer with <s>, </s> and <pad> specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_SEED_TEXT * 4, extra_text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def save_random_llama(
    directory: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_positions: int = 256,
    vocab_size: int | None = None,
    seed: int = 0,
    tie_embeddings: bool = False,
) -> Path:
    """Save a random-weight Llama (and the tokenizer) that `from_pretrained(directory)` loads."""
    directory = Path(directory)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform predictions; a wider init makes log-probs vary between documents,
    # which is what parity tests need to be meaningful.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
