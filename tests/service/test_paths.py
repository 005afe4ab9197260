from __future__ import annotations

import os
from pathlib import Path

import pytest

from scoring.errors import PathNotAllowedError
from service.paths import DataRoots


@pytest.fixture
def layout(tmp_path: Path) -> tuple[DataRoots, Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.jsonl").write_text("{}\n")
    (outside / "secret.jsonl").write_text("{}\n")
    os.symlink(outside, root / "escape_dir")
    os.symlink(outside / "secret.jsonl", root / "escape_file.jsonl")
    os.symlink(root / "sub" / "a.jsonl", root / "inside_link.jsonl")
    return DataRoots([root]), root, outside


def test_allowed(layout: tuple[DataRoots, Path, Path]) -> None:
    roots, root, _ = layout
    real_root = Path(os.path.realpath(root))
    assert roots.resolve("sub/a.jsonl", "inputs[0]") == real_root / "sub" / "a.jsonl"
    assert roots.resolve(str(root / "sub" / "a.jsonl"), "inputs[0]") == real_root / "sub" / "a.jsonl"
    assert roots.resolve("inside_link.jsonl", "x") == real_root / "sub" / "a.jsonl"
    assert roots.resolve("new/output", "output") == real_root / "new" / "output"  # need not exist


@pytest.mark.parametrize(
    "raw, why",
    [
        ("../outside/secret.jsonl", r"\.\."),
        ("sub/../sub/a.jsonl", r"\.\."),  # '..' is refused even when it would stay inside
        ("/etc/passwd", "outside the data roots"),
        ("escape_dir/secret.jsonl", "symlink"),
        ("escape_file.jsonl", "symlink"),
        ("escape_dir/new_output", "symlink"),
    ],
)
def test_refused(layout: tuple[DataRoots, Path, Path], raw: str, why: str) -> None:
    roots, _, _ = layout
    with pytest.raises(PathNotAllowedError, match=why):
        roots.resolve(raw, "inputs[0]")


def test_absolute_path_through_escaping_symlink(layout: tuple[DataRoots, Path, Path]) -> None:
    roots, root, _ = layout
    with pytest.raises(PathNotAllowedError, match="symlink"):
        roots.resolve(str(root / "escape_dir" / "secret.jsonl"), "inputs[0]")


def test_no_roots_refuses_everything(tmp_path: Path) -> None:
    with pytest.raises(PathNotAllowedError, match="no data roots"):
        DataRoots([]).resolve(str(tmp_path), "output")
