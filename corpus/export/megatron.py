"""Megatron-LM / Megatron-Core: one tokenized indexed dataset (`.bin` + `.idx`) per repeat count, and
the `--data-path w1 p1 w2 p2 ...` blend.

Megatron's `BlendedDataset` weighs *samples* (fixed-length token sequences), not documents
(Megatron-LM#547): a prefix's share of the samples is its share of the tokens. So prefix `repeat_r`
gets weight r x (its tokens, EOS included), an integer: the blend then draws each prefix's tokens
r times per epoch of the whole blend, which is the manifest's expanded multiset in tokens.

The format is written here as Megatron-Core's `IndexedDatasetBuilder` writes it (`MMIDIDX` header,
version 1, dtype code, sequence and document counts, int32 lengths, int64 byte pointers, int64
document indices), so reweigh does not need megatron-core; the tests read it back with the real one.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from corpus import storage
from corpus.export.common import (
    ExportConfig,
    GroupStats,
    ManifestSource,
    check_expanded_totals,
    column_sum,
    copy_loader_script,
    group_name,
    group_summary,
    write_record,
)
from corpus.fsutil import dumps_json
from scoring.errors import ConfigError

LOADER = "load_megatron.py"
_HEADER = b"MMIDIDX\x00\x00"
_DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def token_dtype(vocab_size: int) -> np.dtype:
    """Megatron's choice (DType.optimal_dtype): uint16 while the vocabulary fits, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class _IndexedWriter:
    """One prefix: tokens appended to `.bin` as they come, the index written at the end."""

    def __init__(self, prefix: Path, dtype: np.dtype) -> None:
        self.prefix, self.dtype = prefix, dtype
        self.bin = prefix.with_suffix(".bin").open("wb")
        self.lengths: list[int] = []

    def add(self, tokens: list[int]) -> None:
        self.bin.write(np.asarray(tokens, dtype=self.dtype).tobytes())
        self.lengths.append(len(tokens))

    def finish(self) -> int:
        self.bin.close()
        lengths = np.asarray(self.lengths, dtype=np.int32)
        pointers = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]) * self.dtype.itemsize
        documents = np.arange(len(lengths) + 1, dtype=np.int64)  # one sequence per document
        with self.prefix.with_suffix(".idx").open("wb") as fh:
            fh.write(_HEADER)
            fh.write(struct.pack("<Q", 1))
            fh.write(struct.pack("<B", _DTYPE_CODES[self.dtype]))
            fh.write(struct.pack("<Q", len(lengths)))
            fh.write(struct.pack("<Q", len(documents)))
            fh.write(lengths.tobytes(order="C"))
            fh.write(pointers.astype(np.int64).tobytes(order="C"))
            fh.write(documents.tobytes(order="C"))
        return int(lengths.sum(dtype=np.int64))


def load_tokenizer(config: ExportConfig, source: ManifestSource) -> Any:
    from transformers import AutoTokenizer

    from scoring.fingerprint import tokenizer_sha256

    if config.tokenizer is None:
        raise ConfigError(
            "format='megatron' tokenizes: give tokenizer= (--tokenizer DIR, e.g. the teacher's)"
        )
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {config.tokenizer!r} has no EOS token to end documents with")
    scored_with = source.manifest.fingerprint.get("engine", {}).get("tokenizer_sha256")
    if (
        not config.allow_other_tokenizer
        and scored_with is not None
        and tokenizer_sha256(tokenizer) != scored_with
    ):
        raise ConfigError(
            f"tokenizer {config.tokenizer!r} (sha256 {tokenizer_sha256(tokenizer)[:12]}) is not the one the "
            f"manifest was scored with (sha256 {scored_with[:12]}); pass allow_other_tokenizer=True "
            "(--allow-other-tokenizer) to export with it anyway"
        )
    return tokenizer


def export_megatron(config: ExportConfig, source: ManifestSource, directory: Path) -> dict[str, Any]:
    tokenizer = load_tokenizer(config, source)
    dtype = token_dtype(len(tokenizer))
    text_field = source.manifest.fingerprint.get("text_field", "text")
    writers: dict[int, _IndexedWriter] = {}
    stats = GroupStats()
    for repeats, batch in source.batches():
        if repeats not in writers:
            writers[repeats] = _IndexedWriter(directory / group_name(repeats), dtype)
        texts = [t or "" for t in batch.column(text_field).to_pylist()]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            writers[repeats].add([*ids, tokenizer.eos_token_id])
        stats.add(repeats, batch.num_rows, column_sum(batch, "n_tokens"))
    tokens = {r: writer.finish() for r, writer in writers.items()}
    groups = stats.groups()
    check_expanded_totals(source, groups)
    # Integer weights, so the blend line is exact; Megatron normalises them itself.
    weights = [g.repeats * tokens[g.repeats] for g in groups]
    blend = {"prefixes": [g.name for g in groups], "weights": weights}
    (directory / "blend.json").write_bytes(dumps_json(blend))
    # Where the prefixes will be: the export directory's absolute path, or its store URL (Megatron
    # reads local files: the README says to copy a store export to the nodes' disks and rewrite it).
    final = config.out.rstrip("/") if storage.is_remote(config.out) else str(Path(config.out).resolve())
    line = " ".join(f"{w} {final}/{g.name}" for w, g in zip(weights, groups, strict=True))
    (directory / "data_path.txt").write_text(f"--data-path {line}\n")
    loader = copy_loader_script(LOADER, directory)
    body = {
        # tokens: Megatron's (the export tokenizer's, EOS included), each document once.
        "groups": [
            group_summary(g, tokens=tokens[g.repeats], weight=w) for g, w in zip(groups, weights, strict=True)
        ],
        "tokenizer": config.tokenizer,
        "token_dtype": dtype.name,
        "eos_token_id": tokenizer.eos_token_id,
        "blend": "blend.json",
        "data_path": "data_path.txt",
        "loader": loader,
    }
    return write_record(directory, config, source, body)
