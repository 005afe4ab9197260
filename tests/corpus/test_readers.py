"""Readers: every format, per-row statuses (never a silent drop), file-level InputErrors, streaming."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from corpus.readers import Document, detect_format, read_documents, status_kind
from scoring.errors import InputError

ROWS = [{"id": f"d{i}", "text": f"document number {i} ünïcode", "meta": {"n": i}} for i in range(7)]


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def write_input(path: Path, rows: list[dict]) -> Path:
    """Writes rows in the format the path's name says."""
    name = path.name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    elif name.endswith(".jsonl.gz"):
        path.write_bytes(gzip.compress(_jsonl_bytes(rows)))
    elif name.endswith(".jsonl.zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(_jsonl_bytes(rows)))
    elif name.endswith(".jsonl"):
        path.write_bytes(_jsonl_bytes(rows))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.jsonl.gz", "jsonl.gz"),
        ("a.jsonl.zst", "jsonl.zst"),
        ("a.parquet", "parquet"),
        ("ds", "datasets"),
    ],
)
def test_every_format_round_trips(tmp_path: Path, name: str, fmt: str) -> None:
    path = write_input(tmp_path / name, ROWS)
    assert detect_format(path) == fmt
    docs = list(read_documents(path))
    assert [d.id for d in docs] == [r["id"] for r in ROWS]
    assert [d.text for d in docs] == [r["text"] for r in ROWS]
    assert [d.fields for d in docs] == ROWS
    assert all(d.status is None and d.readable for d in docs)


def test_custom_fields_and_id_fallback_to_row_index(tmp_path: Path) -> None:
    rows = [{"body": "x", "key": None}, {"body": "y", "key": 17}, {"body": "z", "key": None}]
    for name in ("a.jsonl", "a.parquet"):
        docs = list(read_documents(write_input(tmp_path / name, rows), text_field="body", id_field="key"))
        assert [d.id for d in docs] == [0, 17, 2]
        assert [d.text for d in docs] == ["x", "y", "z"]


def test_datasets_dict_reads_splits_in_order_with_running_index(tmp_path: Path) -> None:
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
            "test": datasets.Dataset.from_dict({"text": ["c"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    docs = list(read_documents(tmp_path / "dd"))
    assert [(d.id, d.text) for d in docs] == [(0, "a"), (1, "b"), (2, "c")]


def test_bad_rows_become_statuses_naming_line_and_field(tmp_path: Path) -> None:
    lines = [
        b'{"id": 1, "text": "fine"}',
        b'{"id": 2, "text": "bad \xff byte"}',
        b'{"id": 3, "text": ',
        b"[1, 2]",
        b'{"id": 5, "body": "no text field"}',
        b'{"id": 6, "text": 42}',
        b'{"id": 7, "text": null}',
        b"   ",
        b'{"id": 9, "text": "lone \\ud800 surrogate"}',
        b'{"id": 10, "text": "pair \\ud83d\\ude00 is fine"}',
        b'{"id": 11, "text": "last line, no newline"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines))
    docs = list(read_documents(path))
    assert len(docs) == len(lines), "no row is dropped"
    assert [d.status is None for d in docs] == [
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
        True,
    ]
    assert all((d.text is None) == (d.status is not None) for d in docs)
    by_line = {i + 1: d for i, d in enumerate(docs)}
    assert by_line[2].status is not None and by_line[2].status.startswith("invalid_utf8: line 2 ")
    assert by_line[3].status is not None and by_line[3].status.startswith("invalid_json: line 3 ")
    assert by_line[4].status == "not_object: line 4 is a JSON array, not an object"
    assert by_line[5].status == "missing_field: line 5 has no field 'text'"
    assert by_line[5].fields == {"id": 5, "body": "no text field"} and by_line[5].id == 5
    assert by_line[6].status == "not_string: line 6 field 'text' is int, not a string"
    assert by_line[7].status == "not_string: line 7 field 'text' is null, not a string"
    assert by_line[8].status == "blank_line: line 8 is empty"
    assert by_line[9].status is not None and status_kind(by_line[9].status) == "invalid_text"
    assert by_line[10].text == "pair 😀 is fine"
    assert by_line[11].text == "last line, no newline"
    # Unparseable rows fall back to the row (= line) index as id.
    assert [by_line[n].id for n in (2, 3, 4, 8)] == [1, 2, 3, 7]


def test_blank_lines_are_rows_but_a_trailing_newline_is_not(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n{"text": "b"}\r\n')
    docs = list(read_documents(path))
    assert [d.text for d in docs] == ["a", None, "b"]
    assert docs[1].status == "blank_line: line 2 is empty"
    assert docs[2].id == 2


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n')
    assert [d.text for d in read_documents(path)] == ["a"]


def test_concatenated_zstd_frames_and_gzip_members(tmp_path: Path) -> None:
    part1, part2 = _jsonl_bytes(ROWS[:3]), _jsonl_bytes(ROWS[3:])
    zst = tmp_path / "multi.jsonl.zst"
    c = zstandard.ZstdCompressor()
    zst.write_bytes(c.compress(part1) + c.compress(part2))
    gz = tmp_path / "multi.jsonl.gz"
    gz.write_bytes(gzip.compress(part1) + gzip.compress(part2))
    for path in (zst, gz):
        assert [d.fields for d in read_documents(path)] == ROWS


def test_lines_spanning_read_chunks(tmp_path: Path) -> None:
    long_text = "word " * 500_000  # 2.5 MB: crosses several 1 MiB read chunks
    rows = [{"text": "short"}, {"text": long_text}, {"text": "after"}]
    for name in ("long.jsonl", "long.jsonl.zst", "long.jsonl.gz"):
        assert [d.text for d in read_documents(write_input(tmp_path / name, rows))] == [
            "short",
            long_text,
            "after",
        ]


@pytest.mark.parametrize("name", ["t.jsonl.gz", "t.jsonl.zst", "t.parquet"])
def test_truncated_files_raise_input_error_naming_the_file(tmp_path: Path, name: str) -> None:
    rows = [{"text": f"row {i} " * 20} for i in range(2000)]
    path = write_input(tmp_path / name, rows)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=name):
        list(read_documents(path))


@pytest.mark.parametrize("name", ["g.jsonl.gz", "g.jsonl.zst", "g.parquet"])
def test_garbage_files_raise_input_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not what the extension says " * 10)
    with pytest.raises(InputError, match=name):
        list(read_documents(path))


def test_corrupt_parquet_page_raises_input_error(tmp_path: Path) -> None:
    rows = [{"text": f"row {i} " * 50} for i in range(3000)]
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500, compression="zstd")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\x00" * 64  # inside a data page; the footer stays intact
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"c\.parquet"):
        list(read_documents(path))


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_documents(tmp_path / "missing.jsonl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown extension"):
        read_documents(tmp_path / "notes.txt")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(InputError, match="not a `datasets`"):
        read_documents(tmp_path / "plain_dir")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    with pytest.raises(InputError, match=r"no column 'text' \(columns: body\)"):
        read_documents(tmp_path / "nocol.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "intcol.parquet")
    with pytest.raises(InputError, match="int64, not a string"):
        read_documents(tmp_path / "intcol.parquet")


def test_parquet_null_text_is_a_row_status(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)
    docs = list(read_documents(path))
    assert [d.text for d in docs] == ["a", None, "c"]
    assert docs[1].status == "not_string: row 1 field 'text' is null, not a string"


def test_document_is_frozen() -> None:
    doc = Document(1, "x", {"text": "x"}, None)
    with pytest.raises(AttributeError):
        doc.text = "y"  # type: ignore[misc]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["big.jsonl.zst", "big.parquet"])
def test_memory_does_not_grow_with_file_size(tmp_path: Path, name: str) -> None:
    rows = [
        {"id": i, "text": f"document {i} " + "filler text " * 40} for i in range(40_000)
    ]  # ~20 MB of text
    path = write_input(tmp_path / name, rows)
    del rows
    tracemalloc.start()
    n = 0
    for _ in read_documents(path):
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 40_000
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while streaming"
