"""Jobs and manifests over HTTP on a fake engine: lifecycle, confinement, cancel/resume, shards."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corpus.rewrite import RewriteConfig
from service.jobs import JobStore
from tests.service.conftest import AUTH, write_jsonl
from tests.service.fakes import FakeEngine


def submit(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.headers["location"].endswith(f"/v1/jobs/{r.json()['id']}")
    return r.json()


def wait_for(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def output_files(directory: Path) -> dict[str, bytes]:
    names = ["manifest.json", "report.json"] + [
        f"shards/{p.name}" for p in sorted((directory / "shards").iterdir())
    ]
    return {n: (directory / n).read_bytes() for n in names}


def test_job_runs_and_serves_manifest_and_shards(client: TestClient, data_root: Path) -> None:
    write_jsonl(data_root / "in" / "a.jsonl", 60)
    write_jsonl(data_root / "in" / "b.jsonl", 40, start=60)
    job = submit(
        client, inputs=["in/a.jsonl", "in/b.jsonl"], output="out", shard_rows=10, selection={"ratio": 0.5}
    )
    assert job["state"] == "queued" and job["manifest_url"] is None
    job = wait_for(client, job["id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    assert job["progress"]["documents"] == 100 and job["manifest_url"].endswith(f"/v1/manifests/{job['id']}")

    r = client.get(f"/v1/manifests/{job['id']}", headers=AUTH)
    manifest = r.json()
    # As on disk, but the inputs are named relative to the data root: no server path leaves it.
    on_disk = json.loads((data_root / "out" / "manifest.json").read_text())
    assert [i["path"] for i in on_disk["inputs"]] == [str(data_root.resolve() / "in" / n) for n in ("a.jsonl", "b.jsonl")]
    assert [i["path"] for i in manifest["inputs"]] == ["in/a.jsonl", "in/b.jsonl"]
    assert {**manifest, "inputs": on_disk["inputs"]} == on_disk
    assert str(data_root) not in r.text
    assert manifest["totals"]["rows_out"] == 50
    share = client.get(f"/v1/manifests/{job['id']}?rank=1&world_size=2", headers=AUTH).json()
    assert share["partition"] == {"rank": 1, "world_size": 2}
    assert [s["path"] for s in share["shards"]] == [s["path"] for s in manifest["shards"][1::2]]

    shard = manifest["shards"][0]
    url = f"/v1/manifests/{job['id']}/{shard['path']}"
    whole = client.get(url, headers=AUTH)
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == shard["sha256"]
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={**AUTH, "Range": "bytes=4-99"})
    assert part.status_code == 206 and part.content == whole.content[4:100]
    assert part.headers["content-range"] == f"bytes 4-99/{shard['bytes']}"
    assert client.get(url, headers={**AUTH, "Range": f"bytes={shard['bytes'] + 10}-"}).status_code == 416

    listed = client.get("/v1/jobs", headers=AUTH).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/v1/jobs?state=failed", headers=AUTH).json()["jobs"] == []
    assert 'reweigh_jobs{state="succeeded"} 1.0' in client.get("/metrics").text
    assert client.delete(f"/v1/jobs/{job['id']}", headers=AUTH).status_code == 409


@pytest.mark.parametrize("name", ["manifest.json", "..%2Fjob.json", "part-99999.parquet", "report.json"])
def test_only_listed_shards_are_served(client: TestClient, data_root: Path, name: str) -> None:
    write_jsonl(data_root / "a.jsonl", 10)
    job = wait_for(client, submit(client, inputs=["a.jsonl"], output="out")["id"], ("succeeded",))
    assert client.get(f"/v1/manifests/{job['id']}/shards/{name}", headers=AUTH).status_code == 404


def test_manifest_of_unknown_or_unfinished_job(
    client: TestClient, engine: FakeEngine, data_root: Path
) -> None:
    assert client.get("/v1/manifests/nope", headers=AUTH).status_code == 404
    engine.delay_s = 0.2
    write_jsonl(data_root / "a.jsonl", 30)
    job = submit(client, inputs=["a.jsonl"], output="out", chunk_docs=5)
    r = client.get(f"/v1/manifests/{job['id']}", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"] == "JobStateError"
    assert client.get(f"/v1/manifests/{job['id']}?rank=0", headers=AUTH).status_code == 422
    client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)


def test_paths_are_confined_before_anything_is_read(
    client: TestClient, data_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write_jsonl(outside / "secret.jsonl", 3)
    os.symlink(outside, data_root / "link")
    write_jsonl(data_root / "ok.jsonl", 3)
    cases = [
        ({"inputs": ["../outside/secret.jsonl"], "output": "o1"}, 403, "inputs[0]"),
        ({"inputs": [str(outside / "secret.jsonl")], "output": "o2"}, 403, "inputs[0]"),
        ({"inputs": ["link/secret.jsonl"], "output": "o3"}, 403, "inputs[0]"),
        ({"inputs": ["ok.jsonl"], "output": "link/out"}, 403, "output"),
        ({"inputs": ["ok.jsonl"], "output": "/tmp/elsewhere"}, 403, "output"),
        ({"inputs": ["ok.jsonl"], "output": "a/../../o"}, 403, "output"),
        ({"inputs": ["missing.jsonl"], "output": "o4"}, 422, "inputs[0]"),
        ({"inputs": ["ok.jsonl"], "output": "ok.jsonl"}, 422, "inputs[0]"),
    ]
    for body, status, field in cases:
        r = client.post("/v1/jobs", json=body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        assert r.json()["detail"].startswith(field), r.json()
    assert not (outside / "o").exists() and not (outside / "out").exists()
    assert client.get("/v1/jobs", headers=AUTH).json()["jobs"] == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"inputs": [], "output": "o"}, "inputs"),
        ({"inputs": ["a.jsonl"]}, "output"),
        ({"inputs": ["a.jsonl"], "output": "o", "selection": {"ratio": 2}}, "selection"),
        ({"inputs": ["a.jsonl"], "output": "o", "selection": {"method": "soft", "ratio": 0.5}}, "selection"),
        ({"inputs": ["a.jsonl"], "output": "o", "on_error": "ignore"}, "on_error"),
        ({"inputs": ["a.jsonl"], "output": "o", "colour": "blue"}, "colour"),
        ({"inputs": ["a.jsonl"], "output": "o", "chunk_docs": 0}, "chunk_docs"),
    ],
)
def test_bad_job_bodies_are_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = client.post("/v1/jobs", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert any(f["field"].startswith(field) for f in r.json()["fields"]), r.json()


def test_cancel_then_resubmit_resumes_to_identical_output(
    make_client: Callable[..., TestClient], engine: FakeEngine, data_root: Path
) -> None:
    client = make_client()
    write_jsonl(data_root / "a.jsonl", 120)
    # Uninterrupted reference run.
    ref = wait_for(
        client, submit(client, inputs=["a.jsonl"], output="ref", chunk_docs=10)["id"], ("succeeded",)
    )
    assert ref["attempts"] == 1

    engine.delay_s = 0.05
    job = submit(client, inputs=["a.jsonl"], output="out", chunk_docs=10)
    wait_for(client, job["id"], ("running",))
    queued = submit(client, inputs=["a.jsonl"], output="other", chunk_docs=10)
    # A second live job on the same output is refused.
    r = client.post("/v1/jobs", json={"inputs": ["a.jsonl"], "output": "out"}, headers=AUTH)
    assert r.status_code == 409
    # Queued: cancelled at once. Running: stops at its next chunk.
    assert client.delete(f"/v1/jobs/{queued['id']}", headers=AUTH).json()["state"] == "cancelled"
    while not list((data_root / "out").glob("scores/*/chunk-*")):
        time.sleep(0.01)
    cancelling = client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
    assert cancelling.status_code == 202 and cancelling.json()["cancel_requested"]
    cancelled = wait_for(client, job["id"], ("cancelled", "succeeded"))
    assert cancelled["state"] == "cancelled" and "cancelled" in cancelled["error"]
    assert not (data_root / "out" / "manifest.json").exists()

    engine.delay_s = 0.0
    calls_before = sum(engine.calls)
    again = wait_for(
        client, submit(client, inputs=["a.jsonl"], output="out", chunk_docs=10)["id"], ("succeeded",)
    )
    assert again["state"] == "succeeded"
    assert sum(engine.calls) - calls_before < 120  # resumed: the scored chunks were not redone
    assert output_files(data_root / "out") == output_files(data_root / "ref")


def test_failed_job_records_the_named_error(client: TestClient, data_root: Path) -> None:
    # The format is known from the name (accepted at submit); the content is not gzip (found at run).
    (data_root / "bad.jsonl.gz").write_bytes(b"\x00\x01 not gzip at all")
    job = wait_for(client, submit(client, inputs=["bad.jsonl.gz"], output="o")["id"], ("failed", "succeeded"))
    assert job["state"] == "failed" and job["error"].startswith("InputError"), job
    assert "bad.jsonl.gz" in job["error"]


def test_store_requeues_interrupted_jobs_first(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    config = RewriteConfig(inputs=[str(tmp_path / "a")], output=str(tmp_path / "o1"))
    first = store.create({"output": "o1"}, config, "alice")
    second = store.create(
        {"output": "o2"}, config.model_copy(update={"output": str(tmp_path / "o2")}), "alice"
    )
    assert store.claim_next().id == first.id  # type: ignore[union-attr]
    store.close()  # the process "dies" with first running

    store = JobStore(tmp_path / "jobs.sqlite")
    assert store.requeue_interrupted() == [first.id]
    resumed = store.claim_next()
    assert resumed is not None and resumed.id == first.id and resumed.attempts == 2
    assert store.count_by_state() == {"running": 1, "queued": 1}
    assert store.get(second.id).state == "queued"
    store.close()


def test_shutdown_leaves_the_running_job_to_resume(
    make_settings: Callable[..., Any], engine: FakeEngine, data_root: Path
) -> None:
    from service.app import create_app

    write_jsonl(data_root / "a.jsonl", 100)
    settings = make_settings()
    engine.delay_s = 0.05
    with TestClient(create_app(settings, engine_factory=lambda _s: engine)) as client:
        job = submit(client, inputs=["a.jsonl"], output="out", chunk_docs=10)
        wait_for(client, job["id"], ("running",))
    # The lifespan stopped the job at a chunk boundary and put it back in the queue, not cancelled.
    store = JobStore(settings.jobs_db)
    assert store.get(job["id"]).state == "queued"
    store.close()
    engine.delay_s = 0.0
    with TestClient(create_app(settings, engine_factory=lambda _s: engine)) as client:
        done = wait_for(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert engine.closed
