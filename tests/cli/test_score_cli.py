"""`reweigh score` end to end on tiny models: formats, row order, per-row reasons, file errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from scoring import EngineConfig, ScoringEngine
from service.cli import main

ROWS = [
    {"id": "a", "text": "The teacher reads this sentence."},
    {"text": "no id: the row index stands in"},
    {"id": 7, "text": ""},
    {"id": 8, "body": "the text field is missing"},
    {"id": 9, "text": "   "},
    {"id": 10, "text": "last one, a little longer than the others " * 5},
]


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _run(tiny_pair, out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    teacher, reference = tiny_pair
    return main(["score", "--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32",
                 "-o", str(out), *extra, *map(str, inputs)])


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_score_formats_one_row_per_document_in_order(tiny_pair, tmp_path, fmt):
    path = tmp_path / f"in.{fmt}"
    raw = _jsonl_bytes(ROWS)
    if fmt == "jsonl":
        path.write_bytes(raw)
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress(raw))
    elif fmt == "jsonl.zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    else:
        pq.write_table(pa.Table.from_pylist([{"id": str(r.get("id", "")) or None, "text": r.get("text")} for r in ROWS]), path)
    out = tmp_path / "out.parquet"
    assert _run(tiny_pair, out, path) == 0
    table = pq.read_table(out).to_pylist()
    assert [r["status"].split(":")[0] for r in table] == (
        ["ok", "ok", "empty", "missing_field", "blank", "ok"] if fmt != "parquet"
        # parquet has a text column for every row: the missing value is a null
        else ["ok", "ok", "empty", "not_string", "blank", "ok"]
    )
    assert table[0]["id"] == "a" and table[1]["id"] == "1"
    assert list(table[0]) == ["id", "n_tokens", "teacher_logprob", "reference_logprob", "score", "status"]
    engine = ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="float32"))
    [direct] = engine.score([ROWS[5]["text"]])
    assert table[5]["score"] == pytest.approx(direct.score, abs=1e-6)
    assert all(r["score"] is None for r in table if r["status"] != "ok")


def test_invalid_utf8_line_gets_a_reason_and_the_rest_is_scored(tiny_pair, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_jsonl_bytes(ROWS[:1]) + b'{"id": "x", "text": "caf\xe9 bytes"}\n' + _jsonl_bytes(ROWS[5:]))
    out = tmp_path / "out.parquet"
    assert _run(tiny_pair, out, path) == 0
    statuses = [r["status"] for r in pq.read_table(out).to_pylist()]
    assert statuses[0] == "ok" and statuses[2] == "ok"
    assert statuses[1].startswith("invalid_utf8") and "line" in statuses[1]


def test_truncated_parquet_fails_naming_the_file_and_leaves_no_output(tiny_pair, tmp_path, capsys):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), good)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(good.read_bytes()[:-20])
    out = tmp_path / "out.parquet"
    assert _run(tiny_pair, out, good, broken) == 2
    assert "broken.parquet" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.parquet*"))


def test_missing_input_and_custom_fields(tiny_pair, tmp_path, capsys):
    assert _run(tiny_pair, tmp_path / "o.parquet", tmp_path / "nope.jsonl") == 2
    assert "nope.jsonl" in capsys.readouterr().err
    path = tmp_path / "custom.jsonl"
    path.write_bytes(_jsonl_bytes([{"doc": "d1", "content": "custom fields work"}]))
    out = tmp_path / "o.parquet"
    assert _run(tiny_pair, out, path, extra=("--text-field", "content", "--id-field", "doc")) == 0
    [row] = pq.read_table(out).to_pylist()
    assert row["id"] == "d1" and row["status"] == "ok"
