"""Packed fixed-length token blocks, as pretraining loops take them: documents tokenized, each
followed by EOS, concatenated and cut every `seq_len` tokens (a document may span two blocks).

A worker packs the documents it owns, in order; its last block is padded (attention_mask 0 on the
padding) rather than dropped, so every token of the epoch is seen exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from scoring.errors import ConfigError


@dataclass
class Packing:
    tokenizer: Any
    seq_len: int
    text_field: str
    eos_id: int = field(init=False)
    pad_id: int = field(init=False)

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ConfigError(f"seq_len={self.seq_len} must be at least 1")
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is None:
            raise ConfigError(
                f"tokenizer {type(self.tokenizer).__name__} has no eos_token_id to join documents with"
            )
        self.eos_id = int(eos)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = self.eos_id if pad is None else int(pad)
        # A document repeated r times is tokenized once (repeats of a row group arrive close together).
        self._tokens = lru_cache(maxsize=4096)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return (*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.eos_id)

    def blocks(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, torch.Tensor]]:
        buffer: list[int] = []
        for row in rows:
            buffer.extend(self._tokens(row[self.text_field] or ""))
            while len(buffer) >= self.seq_len:
                yield self._block(buffer[: self.seq_len], self.seq_len)
                del buffer[: self.seq_len]
        if buffer:
            real = len(buffer)
            yield self._block(buffer + [self.pad_id] * (self.seq_len - real), real)

    def _block(self, tokens: list[int], real: int) -> dict[str, torch.Tensor]:
        mask = torch.zeros(self.seq_len, dtype=torch.long)
        mask[:real] = 1
        return {"input_ids": torch.tensor(tokens, dtype=torch.long), "attention_mask": mask}

    @staticmethod
    def blocks_before(consumed: int, worker: int, workers: int, batch_size: int) -> int:
        """How many of its blocks worker `worker` had handed out when the training loop had taken
        `consumed` blocks: a DataLoader takes batches of `batch_size` from its workers in turn."""
        if workers == 1:
            return consumed
        if consumed % batch_size:
            raise ConfigError(
                f"consumed={consumed} is not a whole number of batches of batch_size={batch_size} "
                f"(with {workers} workers the loader hands blocks out by batch)"
            )
        batches = consumed // batch_size
        return (batches // workers + (1 if worker < batches % workers else 0)) * batch_size
