"""A finished job whose documents repeat 0-3 times, the tokenizer it is exported with, and what one
epoch of it holds (the manifest's expanded multiset)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpus.config import RewriteConfig, SelectionConfig
from corpus.manifest import load_manifest
from corpus.rewrite import run_rewrite
from tests.corpus.fakes import FakeSpec
from tests.corpus.helpers import make_rows, write_jsonl


@pytest.fixture(scope="session")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export-job")
    rows = make_rows(120)
    for row in rows[7::10]:
        row["meta"] = None  # nulls in a nested column: exported as JSON null, not dropped
    path = write_jsonl(d / "in.jsonl", rows)
    sel = SelectionConfig(method="soft", temperature=0.3, max_weight=3.0, target_documents=150)
    run_rewrite(
        RewriteConfig(inputs=[str(path)], output=str(d / "out"), selection=sel, shard_rows=40), FakeSpec()
    )
    return d / "out"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    d = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(d)
    return d


def expanded(job: Path) -> Counter[str]:
    """id -> times one epoch yields it."""
    counts: Counter[str] = Counter()
    for shard in load_manifest(job).shards:
        for row in pq.read_table(job / shard.path, columns=["id", "repeats"]).to_pylist():
            counts[row["id"]] += row["repeats"]
    return counts


def texts(job: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for shard in load_manifest(job).shards:
        for row in pq.read_table(job / shard.path, columns=["id", "text"]).to_pylist():
            out[row["id"]] = row["text"]
    return out
