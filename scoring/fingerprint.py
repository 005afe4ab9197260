"""The fingerprint of a model pair: everything that decides the numbers, hashed.

Scores, caches and manifests carry it so that stale results are never mixed with fresh ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from scoring.types import SCORE_DEFINITION_VERSION

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# Written next to converted weights (embedded/teacher.py) to name where they came from, e.g. a GGUF
# file's sha256; folded into the fingerprint when present.
SOURCE_FILE = "reweigh_source.json"


@lru_cache(maxsize=32)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in files:
        path = Path(name)
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(directory: Path) -> str:
    """sha256 over config.json and the weight files, in name order (memoised on size and mtime)."""
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
    )
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(key)


def model_identity(name_or_path: str, revision: str | None, config: Any) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.is_dir():
        ident: dict[str, Any] = {"name": path.name, "weights_sha256": weights_sha256(path)}
        source = path / SOURCE_FILE
        if source.is_file():
            ident["source"] = json.loads(source.read_text())
        return ident
    # A hub id: the resolved commit pins the weights.
    return {"name": name_or_path, "revision": getattr(config, "_commit_hash", None) or revision or "unknown"}


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    teacher: dict[str, Any]
    reference: dict[str, Any]
    tokenizer_sha256: str
    dtype: str
    device_type: str  # cpu and cuda kernels differ in the last bits
    max_length: int
    window_overlap: int
    # CPU kernels split sums across threads: 1 and 2 threads differ in the last bits of some scores.
    cpu_threads: int | None = None
    # Windows scored alone (EngineConfig.batch_invariant) differ from batched ones in the last bits.
    batch_invariant: bool = False
    score_definition: str = SCORE_DEFINITION_VERSION
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        body = json.dumps(self._body(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "digest", hashlib.sha256(body.encode()).hexdigest())

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "teacher": self.teacher,
            "reference": self.reference,
            "tokenizer_sha256": self.tokenizer_sha256,
            "dtype": self.dtype,
            "device_type": self.device_type,
            "max_length": self.max_length,
            "window_overlap": self.window_overlap,
            "cpu_threads": self.cpu_threads,
            "score_definition": self.score_definition,
        }
        if self.batch_invariant:  # only when set, so that the digests of batched engines stay as they were
            body["batch_invariant"] = True
        return body

    def as_dict(self) -> dict[str, Any]:
        return {**self._body(), "digest": self.digest}
