"""GET /v1/jobs/{id}/diagnostics: a finished job's pair diagnostics, as its report.json has them."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.service.conftest import AUTH
from tests.service.fakes import FakeEngine
from tests.service.test_jobs import submit, wait_for


def test_diagnostics_of_a_finished_job(client: TestClient, data_root: Path) -> None:
    with (data_root / "a.jsonl").open("w") as fh:
        for i in range(40):
            fh.write(json.dumps({"id": i, "text": f"text number {i} " * (1 + i % 5), "source": "ab"[i % 2]}) + "\n")
    job = submit(client, inputs=["a.jsonl"], output="out")
    job = wait_for(client, job["id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    r = client.get(f"/v1/jobs/{job['id']}/diagnostics", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    report = json.loads((data_root / "out" / "report.json").read_text())
    assert body == {"job_id": job["id"], **report["diagnostics"]}
    assert body["documents"] == 40
    assert sum(r["kept"] for r in body["regions"].values()) == report["documents"]["kept"]
    # the fake engine's teacher and reference come from unrelated hash bytes: a pair that disagrees
    assert [w["code"] for w in body["warnings"]] == ["pair_disagrees"]


def test_diagnostics_need_a_finished_job(client: TestClient, engine: FakeEngine, data_root: Path) -> None:
    assert client.get("/v1/jobs/nope/diagnostics", headers=AUTH).status_code == 404
    assert client.get("/v1/jobs/nope/diagnostics").status_code == 401
    engine.delay_s = 0.2
    (data_root / "a.jsonl").write_text("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(30)))
    job = submit(client, inputs=["a.jsonl"], output="out", chunk_docs=5)
    r = client.get(f"/v1/jobs/{job['id']}/diagnostics", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"] == "JobStateError"
    client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
