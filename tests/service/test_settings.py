from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scoring.errors import ConfigError
from service.commands.serve import settings_overrides
from service.settings import load_settings


def test_environment_variables_and_commas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REWEIGH_API_KEYS", "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb")
    monkeypatch.setenv("REWEIGH_DATA_ROOTS", f"{tmp_path}/a,{tmp_path}/b")
    monkeypatch.setenv("REWEIGH_MAX_DOCUMENTS_PER_REQUEST", "7")
    s = load_settings()
    assert [k.principal.name for k in s.api_key_entries] == [
        f"key-{hashlib.sha256(c.encode() * 16).hexdigest()[:8]}" for c in "ab"
    ]
    assert s.data_roots == [tmp_path / "a", tmp_path / "b"]
    assert s.max_documents_per_request == 7
    assert "aaaa" not in repr(s)  # keys never show up in logs or tracebacks


def test_production_refuses_unsafe_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs api_keys"):
        load_settings(environment="production", data_roots=[str(tmp_path)])
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_settings(environment="production", api_keys="short", data_roots=[str(tmp_path)])
    with pytest.raises(ConfigError, match="needs data_roots"):
        load_settings(environment="production", api_keys="k" * 16)
    ok = load_settings(
        environment="production", api_keys="k" * 16, data_roots=[str(tmp_path)], host="0.0.0.0"
    )
    assert ok.environment == "production"


def test_development_refuses_open_network_without_keys() -> None:
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="127.0.0.1").api_keys == []


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_body_bytes"):
        load_settings(max_body_bytes=-1)
    with pytest.raises(ConfigError, match="not absolute"):
        load_settings(data_roots=["relative/dir"])
    with pytest.raises(ConfigError, match="batch_max_documents"):
        load_settings(batch_max_documents=2, max_documents_per_request=10)
    with pytest.raises(ConfigError, match="token_budget"):
        load_settings(max_length=512, token_budget=100)


def test_serve_options_override_only_when_given(tmp_path: Path) -> None:
    from service.cli import build_parser

    args = build_parser().parse_args(["serve", "--teacher", "T", "--data-root", str(tmp_path), "--port", "9"])
    given = settings_overrides(args)
    assert given == {"teacher": "T", "data_roots": [str(tmp_path)], "port": 9}


def test_serve_refuses_unsafe_settings_before_loading_models(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    assert main(["serve", "--environment", "production", "--teacher", "/nonexistent"]) == 2
    assert "needs api_keys" in capsys.readouterr().err
