"""Jobs belong to the key that created them, and job files stay inside the data roots when used.

Reproducers of issue 11 (items 1 and 2): each failed on the code before it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import AUTH, KEY, write_jsonl
from tests.service.fakes import FakeEngine

KEY2 = "second-key-0123456789abcdef"
AUTH2 = {"Authorization": f"Bearer {KEY2}"}


@pytest.fixture
def two_keys(make_client: Callable[..., TestClient]) -> TestClient:
    # Plain keys (the old form): each is its own owner.
    return make_client(api_keys=f"{KEY},{KEY2}")


def submit(client: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=body, headers=auth)
    assert r.status_code == 202, r.text
    return dict(r.json())


def wait_for(client: TestClient, auth: dict[str, str], job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def finished_job(client: TestClient, data_root: Path, output: str = "o1", **body: Any) -> dict[str, Any]:
    write_jsonl(data_root / "docs.jsonl", 40)
    job = submit(client, AUTH, inputs=["docs.jsonl"], output=output, shard_rows=10, **body)
    job = wait_for(client, AUTH, job["id"])
    assert job["state"] == "succeeded", job
    return job


def test_another_key_cannot_replace_a_finished_jobs_output(two_keys: TestClient, data_root: Path) -> None:
    a = finished_job(two_keys, data_root)
    manifest = two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).content
    files = {p: p.read_bytes() for p in (data_root / "o1").rglob("*") if p.is_file()}

    r = two_keys.post(
        "/v1/jobs",
        json={"inputs": ["docs.jsonl"], "output": "o1", "overwrite": True, "selection": {"ratio": 0.1}},
        headers=AUTH2,
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "JobConflictError" and "another key" in r.json()["detail"]
    time.sleep(0.2)  # had a job been queued, it would be running by now
    assert {p: p.read_bytes() for p in (data_root / "o1").rglob("*") if p.is_file()} == files
    assert two_keys.get(f"/v1/jobs/{a['id']}", headers=AUTH).json()["state"] == "succeeded"
    assert two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).content == manifest


def test_other_keys_neither_see_nor_reach_a_job(two_keys: TestClient, data_root: Path) -> None:
    a = finished_job(two_keys, data_root)
    shard = two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).json()["shards"][0]["path"]
    assert [j["id"] for j in two_keys.get("/v1/jobs", headers=AUTH).json()["jobs"]] == [a["id"]]
    assert two_keys.get("/v1/jobs", headers=AUTH2).json()["jobs"] == []
    for method, path in [
        ("GET", f"/v1/jobs/{a['id']}"),
        ("DELETE", f"/v1/jobs/{a['id']}"),
        ("GET", f"/v1/manifests/{a['id']}"),
        ("GET", f"/v1/manifests/{a['id']}/{shard}"),
    ]:
        r = two_keys.request(method, path, headers=AUTH2)
        assert r.status_code == 404, (method, path, r.text)
        # The same answer as for a job that does not exist: nothing tells that it does.
        unknown = two_keys.request(method, path.replace(a["id"], "0" * 32), headers=AUTH2)
        assert r.json()["error"] == unknown.json()["error"] == "NotFoundError"


def test_overwrite_by_the_owner_supersedes_the_old_job(two_keys: TestClient, data_root: Path) -> None:
    a = finished_job(two_keys, data_root, selection={"ratio": 0.5})
    old = two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).json()
    b = submit(
        two_keys, AUTH, inputs=["docs.jsonl"], output="o1", overwrite=True, shard_rows=10, selection={"ratio": 0.1}
    )
    gone = two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH)
    assert gone.status_code == 410 and gone.json()["error"] == "JobSupersededError", gone.text
    assert two_keys.get(f"/v1/jobs/{a['id']}", headers=AUTH).json()["state"] == "superseded"
    assert wait_for(two_keys, AUTH, b["id"])["state"] == "succeeded"
    # The old job never serves the new content; the new one does.
    assert two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).status_code == 410
    shard = old["shards"][0]["path"]
    assert two_keys.get(f"/v1/manifests/{a['id']}/{shard}", headers=AUTH).status_code == 410
    new = two_keys.get(f"/v1/manifests/{b['id']}", headers=AUTH).json()
    assert new["totals"]["rows_out"] == 4 and old["totals"]["rows_out"] == 20


def test_named_keys_and_the_admin_role(make_client: Callable[..., TestClient], data_root: Path) -> None:
    alice, bob, ops = "alice-key-0123456789", "bob-key-0123456789ab", "ops-key-0123456789abc"
    client = make_client(api_keys=f"alice:{alice},bob:{bob},ops:{ops}:admin")
    write_jsonl(data_root / "docs.jsonl", 10)
    job = submit(client, {"Authorization": f"Bearer {alice}"}, inputs=["docs.jsonl"], output="o")
    assert job["owner"] == "alice"
    assert client.get(f"/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {bob}"}).status_code == 404
    seen = client.get("/v1/jobs", headers={"Authorization": f"Bearer {ops}"}).json()["jobs"]
    assert [(j["id"], j["owner"]) for j in seen] == [(job["id"], "alice")]
    # The name alone is not a key.
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer alice"}).status_code == 401


# ------------------------------------------------------------------------------ confinement at use


def test_output_swapped_for_a_symlink_after_submit_is_refused_at_run(
    two_keys: TestClient, engine: FakeEngine, data_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_jsonl(data_root / "slow.jsonl", 50)
    write_jsonl(data_root / "docs.jsonl", 20)
    (data_root / "o2").mkdir()
    engine.delay_s = 0.05
    busy = submit(two_keys, AUTH, inputs=["slow.jsonl"], output="busy", chunk_docs=5)
    queued = submit(two_keys, AUTH, inputs=["docs.jsonl"], output="o2")
    # Between submit and run: the output directory becomes a symlink to a directory outside the root.
    (data_root / "o2").rmdir()
    (data_root / "o2").symlink_to(outside)
    assert two_keys.get(f"/v1/jobs/{queued['id']}", headers=AUTH).json()["state"] == "queued"
    assert two_keys.delete(f"/v1/jobs/{busy['id']}", headers=AUTH).status_code == 202  # its turn now

    job = wait_for(two_keys, AUTH, queued["id"])
    assert job["state"] == "failed" and job["error"].startswith("PathNotAllowedError"), job
    assert list(outside.iterdir()) == []  # nothing was written there
    assert "'o2' leads outside the data roots" in job["error"] and str(tmp_path) not in job["error"]


def _datasets_dir(path: Path, texts: list[str]) -> Path:
    from datasets import Dataset

    Dataset.from_dict({"id": list(range(len(texts))), "text": texts}).save_to_disk(str(path))
    return path


def test_datasets_data_file_symlinked_outside_is_not_read(
    two_keys: TestClient, data_root: Path, tmp_path: Path
) -> None:
    secret = "the outside secret document"
    outside = _datasets_dir(tmp_path / "outside-ds", [secret] * 5)
    ds = _datasets_dir(data_root / "ds", ["an inside document"] * 5)
    arrow = next(ds.glob("data-*.arrow"))
    arrow.unlink()
    arrow.symlink_to(next(outside.glob("data-*.arrow")))

    job = submit(two_keys, AUTH, inputs=["ds"], output="o", selection={"ratio": 1.0})
    job = wait_for(two_keys, AUTH, job["id"])
    assert job["state"] == "failed" and job["error"].startswith("PathNotAllowedError"), job
    assert not (data_root / "o" / "manifest.json").exists()


def test_datasets_metadata_naming_a_file_outside_is_not_read(
    two_keys: TestClient, data_root: Path, tmp_path: Path
) -> None:
    outside = _datasets_dir(tmp_path / "outside-ds", ["the outside secret document"] * 5)
    ds = _datasets_dir(data_root / "ds", ["an inside document"] * 5)
    state = json.loads((ds / "state.json").read_text())
    target = next(outside.glob("data-*.arrow"))
    state["_data_files"] = [{"filename": f"../../{target.relative_to(tmp_path)}"}]
    (ds / "state.json").write_text(json.dumps(state))

    job = wait_for(two_keys, AUTH, submit(two_keys, AUTH, inputs=["ds"], output="o")["id"])
    assert job["state"] == "failed" and job["error"].startswith("PathNotAllowedError"), job


def test_a_shard_swapped_for_a_symlink_is_not_served(
    two_keys: TestClient, data_root: Path, tmp_path: Path
) -> None:
    a = finished_job(two_keys, data_root)
    shard = two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).json()["shards"][0]["path"]
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"outside content")
    (data_root / "o1" / shard).unlink()
    (data_root / "o1" / shard).symlink_to(secret)
    r = two_keys.get(f"/v1/manifests/{a['id']}/{shard}", headers=AUTH)
    assert r.status_code == 403 and b"outside content" not in r.content, r.text
    assert str(data_root) not in r.text and f"'o1/{shard}' leads outside" in r.text  # the client's path

    # The whole output directory swapped for a copy outside: the manifest is not served either.
    shutil.move(data_root / "o1", tmp_path / "moved")
    (data_root / "o1").symlink_to(tmp_path / "moved")
    assert two_keys.get(f"/v1/manifests/{a['id']}", headers=AUTH).status_code == 403


def test_a_job_store_from_before_owners_opens_and_leaves_its_jobs_to_admins(tmp_path: Path) -> None:
    import sqlite3

    from corpus.rewrite import RewriteConfig
    from service.jobs import JobStore
    from service.keys import Principal

    path = tmp_path / "jobs.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL, "
        "config TEXT NOT NULL, output TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, "
        "finished_at REAL, attempts INTEGER NOT NULL DEFAULT 0, progress TEXT, error TEXT, "
        "cancel_requested INTEGER NOT NULL DEFAULT 0);"
    )
    config = RewriteConfig(inputs=[str(tmp_path / "a.jsonl")], output=str(tmp_path / "o"))
    old.execute(
        "INSERT INTO jobs (id, state, request, config, output, created_at) VALUES (?, 'succeeded', '{}', ?, ?, 0)",
        ("a" * 32, config.model_dump_json(exclude_unset=True), config.output),
    )
    old.commit()
    old.close()

    store = JobStore(path)
    try:
        assert store.list_jobs(Principal("alice")) == []
        assert [j.owner for j in store.list_jobs(Principal("ops", admin=True))] == [""]
        with pytest.raises(Exception, match="another key"):
            store.create({"output": "o"}, config, "alice")  # nobody takes over its output
    finally:
        store.close()
