"""POST /v1/scores?scorer=proxy: the proxy's numbers and fingerprint; refused when none was loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scoring.proxy import ProxyScorer, distill
from tests.scoring.test_proxy import CONFIG, zebra_sample
from tests.service.conftest import AUTH


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("service-proxy") / "proxy"
    distill(zebra_sample(), tiny_tokenizer, out, CONFIG)
    return out


def test_scorer_proxy(make_client: Callable[..., TestClient], proxy_dir: Path) -> None:
    client = make_client(proxy=str(proxy_dir))
    docs = [{"id": 1, "text": "zebra zebra the dog"}, {"id": 2, "text": ""}]
    r = client.post("/v1/scores?scorer=proxy", json={"documents": docs}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = ProxyScorer.load(proxy_dir)
    assert body["fingerprint"] == expected.fingerprint.as_dict()
    first, second = body["documents"]
    assert first == {"id": 1, **expected.score(["zebra zebra the dog"])[0].as_row()}
    assert first["teacher_logprob"] is None and second["status"].startswith("empty")
    pair = client.post("/v1/scores", json={"documents": docs}, headers=AUTH).json()
    assert pair["fingerprint"]["digest"] == "f" * 64  # the default is still the pair


def test_scorer_proxy_without_one(client: TestClient) -> None:
    r = client.post("/v1/scores?scorer=proxy", json={"documents": [{"id": 1, "text": "a"}]}, headers=AUTH)
    assert r.status_code == 422 and "without a proxy" in r.json()["detail"]
    r = client.post("/v1/scores?scorer=other", json={"documents": [{"id": 1, "text": "a"}]}, headers=AUTH)
    assert r.status_code == 422
