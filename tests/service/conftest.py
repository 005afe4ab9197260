"""Fixtures for service tests: apps on a fake engine (fast) and helpers to write small corpora."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings, load_settings
from tests.service.fakes import FakeEngine

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def write_jsonl(path: Path, n: int, start: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(start, start + n):
            words = " ".join(f"w{(i * 7 + k) % 23}" for k in range(3 + i % 11))
            fh.write(json.dumps({"id": f"d{i}", "text": f"document {i}: {words}."}) + "\n")
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def make_settings(tmp_path: Path, data_root: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_roots": [str(data_root)],
            "jobs_db": str(tmp_path / "state" / "jobs.sqlite"),
            "api_keys": KEY,
            "batch_wait_ms": 2.0,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], engine: FakeEngine
) -> Iterator[Callable[..., TestClient]]:
    """make_client(**settings) -> a started TestClient on the fake engine (closed at teardown)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        app = create_app(make_settings(**overrides), engine_factory=lambda _s: engine)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
