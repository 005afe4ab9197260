"""Corpus builders shared by the corpus tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard


def make_rows(n: int, start: int = 0, prefix: str = "doc") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "text": f"{prefix} {i} " + "word " * (i % 13) + hashlib.md5(str(i).encode()).hexdigest(),
            "meta": {"source": prefix, "n": i},
        }
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]], extra_lines: list[bytes] | None = None) -> Path:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b"".join(
        line + b"\n" for line in extra_lines or []
    )
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
