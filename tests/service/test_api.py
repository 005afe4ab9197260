"""The HTTP contract on a fake engine: auth, validation, limits, error mapping."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import AUTH, KEY
from tests.service.fakes import FakeEngine, fake_score


def docs(*texts: str) -> dict[str, object]:
    return {"documents": [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]}


def test_scores_answer_per_document_in_order(client: TestClient) -> None:
    r = client.post(
        "/v1/scores", json={"documents": [{"id": 7, "text": "a b c"}, {"id": "x", "text": ""}]}, headers=AUTH
    )
    assert r.status_code == 200
    body = r.json()
    assert body["fingerprint"]["digest"] == "f" * 64
    first, second = body["documents"]
    expected = fake_score("a b c")
    assert first == {"id": 7, **expected.as_row()}
    assert second["id"] == "x" and second["score"] is None and second["status"].startswith("empty")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
    ],
)
def test_v1_routes_need_a_valid_key(client: TestClient, headers: dict[str, str]) -> None:
    for method, path, body in [
        ("POST", "/v1/scores", docs("a")),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs/abc", None),
        ("DELETE", "/v1/jobs/abc", None),
        ("GET", "/v1/manifests/abc", None),
        ("GET", "/v1/manifests/abc/shards/part-00000.parquet", None),
    ]:
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "AuthenticationError"


def test_probes_and_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json()["status"] == "ready"
    assert client.get("/metrics").status_code == 200


def test_without_keys_development_is_open(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="")
    assert client.post("/v1/scores", json=docs("a")).status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"documents": []}, "documents"),
        ({}, "documents"),
        ({"documents": "abc"}, "documents"),
        ({"documents": [{"id": "a"}]}, "documents[0].text"),
        ({"documents": [{"id": "a", "text": 3}]}, "documents[0].text"),
        ({"documents": [{"id": None, "text": "x"}]}, "documents[0].id"),
        ({"documents": [{"id": "a", "text": "x", "extra": 1}]}, "documents[0].extra"),
        ({"documents": [{"id": "a", "text": "x"}], "mode": "fast"}, "mode"),
        ([1, 2], "body"),
        ({"documents": [{"id": "a", "text": "x" * 101}]}, "documents[0].text"),
        ({"documents": [{"id": str(i), "text": "x"} for i in range(9)]}, "documents"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    make_client: Callable[..., TestClient], body: object, field: str
) -> None:
    client = make_client(max_chars_per_document=100, max_documents_per_request=8)
    r = client.post("/v1/scores", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]], r.json()


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"documents": [}', b"\xff\xfe"])
def test_malformed_json_is_422(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/scores", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["fields"][0]["field"] == "body"


def test_body_over_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=2048)
    big = docs("word " * 1000)
    assert client.post("/v1/scores", json=big, headers=AUTH).status_code == 413

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/v1/scores", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "RequestTooLargeError"


def test_unexpected_errors_are_500_without_details(client: TestClient, engine: FakeEngine) -> None:
    engine.fail = RuntimeError("secret /srv/models/teacher stack detail")
    r = client.post("/v1/scores", json=docs("a"), headers=AUTH)
    assert r.status_code == 500
    assert r.json()["error"] == "InternalError"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_engine_that_keeps_failing_is_taken_out_of_service(client: TestClient, engine: FakeEngine) -> None:
    engine.fail = RuntimeError("device lost")
    for _ in range(3):
        assert client.post("/v1/scores", json=docs("a"), headers=AUTH).status_code == 500
    r = client.post("/v1/scores", json=docs("a"), headers=AUTH)
    assert r.status_code == 503 and r.json()["error"] == "EngineDeadError"
    assert "retry-after" in r.headers
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "RuntimeError" in ready.json()["reason"]


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/v2/nothing").status_code == 404
    assert client.put("/v1/scores", json={}, headers=AUTH).status_code == 405


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.post("/v1/scores", json=docs("a b", "c"), headers=AUTH)
    client.get("/v1/jobs/123", headers=AUTH)
    text = client.get("/metrics").text
    assert 'reweigh_http_requests_total{method="POST",route="/v1/scores",status="200"} 1.0' in text
    assert 'route="/v1/jobs/{job_id}",status="404"' in text
    assert 'reweigh_tokens_scored_total{source="http"} 3.0' in text
    assert "reweigh_batch_documents_bucket" in text
    assert 'reweigh_jobs{state="queued"} 0.0' in text
    assert "reweigh_queue_documents 0.0" in text
    assert (
        'reweigh_http_request_seconds_bucket{le="0.005",method="POST",route="/v1/scores",status="200"}'
        in text
    )


def test_openapi_documents_limits_and_bearer_auth(make_client: Callable[..., TestClient]) -> None:
    spec = make_client(max_documents_per_request=5).get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/v1/scores", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/manifests/{job_id}"}
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    request = spec["components"]["schemas"]["ScoreRequest"]
    assert request["properties"]["documents"]["maxItems"] == 5


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    r = client.put("/v1/jobs/abc", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"


def test_error_responses_are_documented_with_their_real_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/scores"]["post"]["responses"]
    assert op["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert {"401", "413", "429", "503"} <= set(op)
