"""A service whose data root is a bucket prefix (moto's S3 server on loopback): jobs read and write
there, manifests and shards are served from there, and the same confinement holds for URLs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.corpus.s3 import bucket, fresh_fs, s3_server
from tests.service.conftest import AUTH, write_jsonl
from tests.service.test_exports import wait_for_export
from tests.service.test_jobs import submit, wait_for

__all__ = ["bucket", "s3_server"]  # fixtures, imported for pytest


def test_job_over_a_bucket_data_root(
    make_client: Callable[..., TestClient], data_root: Path, tmp_path: Path, bucket: str
) -> None:
    root = f"s3://{bucket}/data"
    client = make_client(data_roots=[str(data_root), root])
    fresh_fs().pipe_file(f"{bucket}/data/in/a.jsonl", write_jsonl(tmp_path / "a.jsonl", 40).read_bytes())

    job = submit(
        client, inputs=[f"{root}/in/a.jsonl"], output=f"{root}/out", shard_rows=10, selection={"ratio": 0.5}
    )
    job = wait_for(client, job["id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    assert fresh_fs().isfile(f"{bucket}/data/out/manifest.json")

    manifest = client.get(f"/v1/manifests/{job['id']}", headers=AUTH).json()
    assert [i["path"] for i in manifest["inputs"]] == ["in/a.jsonl"]  # relative to its root, as local ones
    assert manifest["totals"]["rows_out"] == 20
    shard = manifest["shards"][0]
    got = client.get(f"/v1/manifests/{job['id']}/{shard['path']}", headers=AUTH)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == shard["sha256"]
    assert client.get(f"/v1/jobs/{job['id']}/diagnostics", headers=AUTH).status_code == 200
    assert client.get(f"/ui/jobs/{job['id']}", headers=AUTH).status_code == 200

    # Its export is written to the bucket, beside the job's files, its record uploaded last.
    made = client.post(f"/v1/jobs/{job['id']}/exports", json={"format": "hf"}, headers=AUTH)
    assert made.status_code == 202, made.text
    export = wait_for_export(client, made.headers["location"])
    assert export["state"] == "succeeded", export
    assert export["directory"] == "out/exports/hf" and root not in json.dumps(export), export
    assert export["record"]["manifest"]["documents_out"] == manifest["totals"]["documents_out"]
    assert fresh_fs().isfile(f"{bucket}/data/out/exports/hf/export.json")
    again = client.post(f"/v1/jobs/{job['id']}/exports", json={"format": "hf"}, headers=AUTH)
    assert again.status_code == 409 and "already has a hf export" in again.text, again.text


def test_bucket_roots_confine_urls(
    make_client: Callable[..., TestClient], data_root: Path, bucket: str
) -> None:
    root = f"s3://{bucket}/data"
    client = make_client(data_roots=[str(data_root), root])
    for url in (f"s3://{bucket}/other/a.jsonl", f"{root}/../other/a.jsonl", f"{root}-x/a.jsonl"):
        r = client.post("/v1/jobs", json={"inputs": [url], "output": f"{root}/out"}, headers=AUTH)
        assert r.status_code == 403 and "outside the data roots" in r.json()["detail"], r.text
    r = client.post(
        "/v1/jobs", json={"inputs": [f"{root}/none.jsonl"], "output": f"{root}/out"}, headers=AUTH
    )
    assert r.status_code == 422 and f"{root}/none.jsonl" in r.json()["detail"]


def test_missing_bucket_under_a_root_is_404_naming_it(
    make_client: Callable[..., TestClient], data_root: Path, s3_server: object
) -> None:
    root = "s3://reweigh-no-such-bucket/data"
    client = make_client(data_roots=[str(data_root), root])
    r = client.post("/v1/jobs", json={"inputs": [f"{root}/a.jsonl"], "output": f"{root}/out"}, headers=AUTH)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "BucketNotFoundError" and f"{root}/a.jsonl" in r.json()["detail"]
