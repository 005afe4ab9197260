"""corpus.confine: file access checked against the data roots when a file is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import confine
from corpus.fsutil import write_bytes_atomic
from scoring.errors import PathNotAllowedError


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "doc.jsonl").write_bytes(b"inside")
    (outside / "doc.jsonl").write_bytes(b"outside")
    return root, outside


def test_without_confinement_paths_pass_through(layout: tuple[Path, Path]) -> None:
    _, outside = layout
    assert confine.active_roots() is None
    with confine.open_read(outside / "doc.jsonl") as fh:
        assert fh.read() == b"outside"


def test_reads_inside_the_roots_work_and_internal_symlinks_are_followed(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "link").symlink_to(root / "a")
    with confine.confined_to([root]):
        for path in (root / "a" / "doc.jsonl", root / "link" / "doc.jsonl"):
            with confine.open_read(path) as fh:
                assert fh.read() == b"inside"
        assert confine.memory_map(root / "a" / "doc.jsonl").read() == b"inside"
    assert confine.active_roots() is None  # restored on exit


def test_a_directory_swapped_for_an_escaping_symlink_is_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (root / "a" / "doc.jsonl").unlink()
    (root / "a").rmdir()
    (root / "a").symlink_to(outside)
    with confine.confined_to([root]):
        with pytest.raises(PathNotAllowedError, match="leads outside the data roots"):
            confine.open_read(root / "a" / "doc.jsonl")
        with pytest.raises(PathNotAllowedError):
            write_bytes_atomic(root / "a" / "new.json", b"{}")
    assert not (outside / "new.json").exists()


def test_a_swap_after_the_check_is_refused_by_the_walk(layout: tuple[Path, Path]) -> None:
    """The race: the path was resolved and checked, then a component became a symlink. The walk from
    the root's descriptor with O_NOFOLLOW refuses it instead of following it."""
    root, outside = layout
    (root / "a" / "doc.jsonl").unlink()
    (root / "a").rmdir()
    (root / "a").symlink_to(outside)
    with pytest.raises(PathNotAllowedError, match="changed while it was opened"):
        confine._open_beneath(root, ("a", "doc.jsonl"), "a/doc.jsonl")
    (root / "b").mkdir()
    (root / "b" / "doc.jsonl").symlink_to(outside / "doc.jsonl")  # the file itself
    with pytest.raises(PathNotAllowedError):
        confine._open_beneath(root, ("b", "doc.jsonl"), "b/doc.jsonl")


def test_a_missing_file_is_an_os_error_not_a_refusal(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    with confine.confined_to([root]), pytest.raises(FileNotFoundError):
        confine.open_read(root / "a" / "missing.jsonl")


def test_readers_read_under_confinement_and_refuse_escapes(layout: tuple[Path, Path]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpus.readers import read_documents

    root, outside = layout
    table = pa.table({"id": [1, 2], "text": ["a b", "c d"]})
    pq.write_table(table, root / "a" / "docs.parquet")
    pq.write_table(table, outside / "docs.parquet")
    (root / "a" / "escape.parquet").symlink_to(outside / "docs.parquet")
    with confine.confined_to([root]):
        assert [d.text for d in read_documents(root / "a" / "docs.parquet")] == ["a b", "c d"]
        assert len(list(read_documents(root / "a" / "doc.jsonl"))) == 1  # one (unparsable) line
        with pytest.raises(PathNotAllowedError):
            list(read_documents(root / "a" / "escape.parquet"))
