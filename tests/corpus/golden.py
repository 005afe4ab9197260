"""Recorded outputs of the rewrite job, made before the pipeline refactor (issue 10), that every
executor must keep producing: shards, manifest and report.json, for a fixture corpus and selection
settings covering top-fraction, keep-tokens, soft (documents and tokens), the guards (duplicates,
teacher floor, an unreadable input skipped) and stratification (recorded when it was added).

    .venv/bin/python -m tests.corpus.golden record [CASE ...]   # only when an output change is intended

Input paths are written as `<IN>/name` so that the record does not depend on the temp directory.
Parquet bytes name the pyarrow version that wrote them (and the manifest's fingerprint names pyarrow
and numpy): on other versions the shards are compared by content and the manifest without hashes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from corpus.config import RewriteConfig
from tests.corpus.helpers import make_rows, write_jsonl, write_parquet

GOLDEN_DIR = Path(__file__).parent / "golden"
CHUNK_DOCS = 32

CASES: dict[str, dict[str, Any]] = {
    "top_fraction_guards": {
        "selection": {"ratio": 0.3, "min_teacher_logprob": -4.0},
        "shard_rows": 25,
        "on_error": "skip",
        "broken": True,
    },
    "keep_tokens": {"selection": {"keep_tokens": 900, "min_teacher_logprob": -4.5}, "shard_bytes": 2000},
    "soft_documents": {
        "selection": {"method": "soft", "temperature": 0.5, "max_weight": 3.0, "target_documents": 300},
        "seed": 7,
        "shard_rows": 40,
    },
    "soft_tokens": {
        "selection": {"method": "soft", "target_tokens": 2500, "drop_duplicates": False, "min_weight": 0.1},
        "seed": 3,
        "shard_bytes": 3000,
        "on_error": "skip",
        "broken": True,
    },
    "defaults": {},
    # Stratified by a nested field, with one group's share set: sources a, b, c (and a's copies in b).
    "stratified": {
        "selection": {"ratio": 0.4, "stratify_by": "meta.source", "group_shares": {"b": 0.25}},
        "shard_rows": 30,
    },
}


def write_inputs(directory: Path, broken: bool) -> list[str]:
    """Three readable inputs in three formats, with exact duplicates within and across inputs, bad
    lines, and (when `broken`) a truncated zstd input that cannot be read at all."""
    directory.mkdir(parents=True, exist_ok=True)
    a_rows = make_rows(120, prefix="a")
    b_rows = make_rows(90, prefix="b")
    # Same texts under other ids: the duplicate guard keeps the first occurrence in input order.
    b_rows += [{**r, "id": f"dup-{r['id']}"} for r in a_rows[5:25]]
    a_rows += [{**r, "id": f"dup2-{r['id']}"} for r in a_rows[40:45]]
    a = write_jsonl(directory / "a.jsonl", a_rows, extra_lines=[b"not json", b'{"text": ""}'])
    b = write_jsonl(directory / "b.jsonl.zst", b_rows)
    c = write_parquet(directory / "c.parquet", make_rows(70, prefix="c"))
    paths = [str(a), str(b), str(c)]
    if broken:
        bad = write_jsonl(directory / "broken.jsonl.zst", make_rows(40, prefix="x"))
        bad.write_bytes(bad.read_bytes()[:-7])
        paths.insert(2, str(bad))
    return paths


def case_config(name: str, input_dir: Path, out: Path) -> RewriteConfig:
    """The case's job over the fixture corpus in `input_dir` (written there unless already there:
    a resumed job must find its inputs unchanged)."""
    case = dict(CASES[name])
    broken = case.pop("broken", False)
    if input_dir.is_dir():
        names = ["a.jsonl", "b.jsonl.zst", *(["broken.jsonl.zst"] if broken else []), "c.parquet"]
        inputs = [str(input_dir / n) for n in names]
    else:
        inputs = write_inputs(input_dir, broken)
    return RewriteConfig.model_validate(
        {"inputs": inputs, "output": str(out), "chunk_docs": CHUNK_DOCS, **case}
    )


def table_digest(path: Path) -> str:
    """A shard's content (schema, field metadata, rows), independent of the writing library's version."""
    table = pq.read_table(path)
    body = {"schema": str(table.schema), "rows": table.to_pylist()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def snapshot(out: Path, input_dir: Path) -> dict[str, Any]:
    """What the record holds of a finished job directory."""

    def text(name: str) -> Any:
        return json.loads((out / name).read_text().replace(str(input_dir), "<IN>"))

    manifest = text("manifest.json")
    return {
        "manifest": manifest,
        "report": text("report.json"),
        "shards": {s["path"]: table_digest(out / s["path"]) for s in manifest["shards"]},
    }


def _without_versions(manifest: dict[str, Any]) -> dict[str, Any]:
    m = json.loads(json.dumps(manifest))
    m["fingerprint"].pop("code")
    m["fingerprint"].pop("digest")
    for s in m["shards"]:
        s.pop("bytes")
        s.pop("sha256")
    return m


def assert_matches(name: str, got: dict[str, Any]) -> None:
    want = json.loads((GOLDEN_DIR / f"{name}.json").read_text())
    assert got["report"] == want["report"]
    assert got["shards"] == want["shards"]
    if got["manifest"]["fingerprint"]["code"] == want["manifest"]["fingerprint"]["code"]:
        assert got["manifest"] == want["manifest"]  # byte-level: shard sha256s included
    else:
        assert _without_versions(got["manifest"]) == _without_versions(want["manifest"])


def record(run: Callable[[RewriteConfig], object], root: Path, names: list[str]) -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    for name in names:
        input_dir, out = root / name / "in", root / name / "out"
        run(case_config(name, input_dir, out))
        body = json.dumps(snapshot(out, input_dir), indent=1, sort_keys=True) + "\n"
        (GOLDEN_DIR / f"{name}.json").write_text(body)
        print(f"recorded {name}")


if __name__ == "__main__" and sys.argv[1:2] == ["record"]:  # record [CASE ...]: only those (default: all)
    import tempfile

    from corpus.rewrite import run_rewrite
    from tests.corpus.fakes import FakeSpec

    with tempfile.TemporaryDirectory() as tmp:
        record(lambda config: run_rewrite(config, FakeSpec()), Path(tmp), sys.argv[2:] or list(CASES))
