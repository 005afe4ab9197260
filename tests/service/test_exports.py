"""Exports over HTTP on the fake engine: in the background with a state, as a job option, owned by the
job's key, confined to the data roots, and resumed after a restart."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corpus.manifest import load_manifest
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import AUTH, KEY, write_jsonl
from tests.service.fakes import FakeEngine
from tests.service.test_ownership import AUTH2, KEY2, finished_job, submit, wait_for


@pytest.fixture
def two_keys(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=f"{KEY},{KEY2}")


def wait_for_export(client: TestClient, url: str, auth: dict[str, str] = AUTH, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        export = client.get(url, headers=auth).json()
        if export["state"] in ("succeeded", "failed", "cancelled"):
            return dict(export)
        time.sleep(0.05)
    raise AssertionError(f"export {url} never finished: {export}")


def test_an_export_runs_in_the_background_and_reports_its_state(
    two_keys: TestClient, data_root: Path
) -> None:
    job = finished_job(two_keys, data_root)
    url = f"/v1/jobs/{job['id']}/exports"
    assert two_keys.post(url, json={"format": "mds"}).status_code == 401
    made = two_keys.post(url, json={"format": "mds"}, headers=AUTH)
    assert made.status_code == 202, made.text
    assert made.json()["state"] in ("queued", "running", "succeeded") and made.json()["origin"] == "request"
    export = wait_for_export(two_keys, made.headers["location"])
    assert export["state"] == "succeeded", export
    record = export["record"]
    assert record["export"] == "mds" and export["directory"] == "o1/exports/mds"
    assert sum(g["documents"] for g in record["groups"]) == record["manifest"]["documents_out"]
    assert (data_root / "o1" / "exports" / "mds" / "export.json").is_file()
    # Clients never see a server path.
    assert str(data_root) not in made.text + json.dumps(export) and record["manifest"]["path"] == "o1/manifest.json"

    assert two_keys.post(url, json={"format": "mds"}, headers=AUTH).status_code == 409  # exists
    again = two_keys.post(url, json={"format": "mds", "overwrite": True}, headers=AUTH)
    assert again.status_code == 202 and wait_for_export(two_keys, again.headers["location"])["state"] == "succeeded"
    listed = two_keys.get(url, headers=AUTH).json()["exports"]
    assert [e["id"] for e in listed] == [export["id"], again.json()["id"]]
    assert [e["id"] for e in two_keys.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["exports"]] == [
        e["id"] for e in listed
    ]


def test_bad_export_requests_are_named_before_anything_is_queued(two_keys: TestClient, data_root: Path) -> None:
    job = finished_job(two_keys, data_root)
    url = f"/v1/jobs/{job['id']}/exports"
    for body, field in (
        ({"format": "mds", "mds_shard_bytes": 5}, "mds_shard_bytes"),
        ({"format": "mds", "overwrite": "yes"}, "overwrite"),  # strict: not a boolean
        ({"format": "csv"}, "format"),
        ({"format": "hf", "shards": 2}, "shards"),
    ):
        r = two_keys.post(url, json=body, headers=AUTH)
        assert r.status_code == 422 and field in r.text, (body, r.text)
    r = two_keys.post(url, json={"format": "hf", "allow_other_tokenizer": True}, headers=AUTH)
    assert r.status_code == 422 and "only used by format='megatron'" in r.text, r.text
    assert two_keys.get(url, headers=AUTH).json()["exports"] == []
    assert two_keys.get(f"{url}/{'0' * 32}", headers=AUTH).status_code == 404
    assert two_keys.get(f"{url}/not-an-id", headers=AUTH).status_code == 404


def test_exports_are_reached_only_through_their_job_s_owner(two_keys: TestClient, data_root: Path) -> None:
    job = finished_job(two_keys, data_root)
    url = f"/v1/jobs/{job['id']}/exports"
    made = two_keys.post(url, json={"format": "hf"}, headers=AUTH)
    assert made.status_code == 202
    export_url = made.headers["location"]
    for r in (
        two_keys.post(url, json={"format": "mds"}, headers=AUTH2),
        two_keys.get(url, headers=AUTH2),
        two_keys.get(export_url, headers=AUTH2),
    ):
        assert r.status_code == 404, r.text
    assert wait_for_export(two_keys, export_url)["state"] == "succeeded"
    # The other key's own job lists none of them.
    write_jsonl(data_root / "b.jsonl", 10)
    other = wait_for(two_keys, AUTH2, submit(two_keys, AUTH2, inputs=["b.jsonl"], output="o2")["id"])
    assert two_keys.get(f"/v1/jobs/{other['id']}/exports", headers=AUTH2).json()["exports"] == []
    assert two_keys.get(f"/v1/jobs/{other['id']}/exports/{made.json()['id']}", headers=AUTH2).status_code == 404


def test_a_job_s_exports_run_after_its_manifest_and_show_in_its_status(
    two_keys: TestClient, data_root: Path
) -> None:
    job = finished_job(two_keys, data_root, exports=[{"format": "hf", "hf_shard_rows": 3}, {"format": "mds"}])
    assert job["state"] == "succeeded"
    assert job["request"]["exports"] == [{"format": "hf", "hf_shard_rows": 3}, {"format": "mds"}]
    deadline = time.monotonic() + 60
    while not all(e["state"] == "succeeded" for e in job["exports"]) or len(job["exports"]) < 2:
        assert time.monotonic() < deadline, job["exports"]
        assert not any(e["state"] == "failed" for e in job["exports"]), job["exports"]
        time.sleep(0.05)
        job = two_keys.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert [(e["format"], e["origin"]) for e in job["exports"]] == [("hf", "job"), ("mds", "job")]
    manifest = load_manifest(data_root / "o1")
    for export in job["exports"]:
        # Made from the finished job: its manifest (the rewrite's last write) came first.
        assert export["record"]["manifest"]["digest"] == manifest.fingerprint["digest"]
        assert export["started_at"] >= (data_root / "o1" / "manifest.json").stat().st_mtime - 1
    assert len(list((data_root / "o1" / "exports" / "hf" / "data").rglob("*.parquet"))) > len(manifest.shards)


def test_overwriting_a_job_replaces_its_exports_with_the_new_job_s(two_keys: TestClient, data_root: Path) -> None:
    first = finished_job(two_keys, data_root, exports=[{"format": "mds"}])
    url = f"/v1/jobs/{first['id']}/exports"
    deadline = time.monotonic() + 60
    while two_keys.get(url, headers=AUTH).json()["exports"][0]["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = {"inputs": ["docs.jsonl"], "output": "o1", "overwrite": True, "selection": {"ratio": 0.5}}
    second = wait_for(two_keys, AUTH, submit(two_keys, AUTH, **body, exports=[{"format": "mds"}])["id"])
    assert second["state"] == "succeeded", second
    # The old job's export went with its files (it is part of the job directory): the new one is made
    # from the new manifest, not refused as existing.
    while not second["exports"] or second["exports"][0]["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        second = two_keys.get(f"/v1/jobs/{second['id']}", headers=AUTH).json()
    assert second["exports"][0]["state"] == "succeeded", second["exports"]
    record = json.loads((data_root / "o1" / "exports" / "mds" / "export.json").read_text())
    assert record["manifest"]["digest"] == load_manifest(data_root / "o1").fingerprint["digest"]
    assert record["manifest"]["documents_out"] < 40


def test_bad_job_exports_are_refused_at_submit_and_nothing_is_created(
    two_keys: TestClient, data_root: Path
) -> None:
    write_jsonl(data_root / "docs.jsonl", 10)
    for exports, named in (
        ([{"format": "mds"}, {"format": "mds"}], "one export per format"),
        ([{"format": "mds", "allow_other_tokenizer": True}], "exports[0]: "),
        ([{"format": "mds", "hf_shard_rows": 0}], "hf_shard_rows"),
        ([{"format": "hf"}] * 4, "exports"),
    ):
        r = two_keys.post("/v1/jobs", json={"inputs": ["docs.jsonl"], "output": "o", "exports": exports}, headers=AUTH)
        assert r.status_code == 422 and named in r.text, (exports, r.text)
    assert not (data_root / "o").exists()


def test_a_failing_export_names_its_cause_and_the_job_stays_succeeded(
    two_keys: TestClient, data_root: Path, tmp_path: Path
) -> None:
    job = finished_job(two_keys, data_root)
    shards = sorted((data_root / "o1" / "shards").iterdir())
    # A shard swapped for a symlink to a copy outside the root: confined, the export refuses it.
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(shards[0].read_bytes())
    shards[0].unlink()
    shards[0].symlink_to(outside)
    made = two_keys.post(f"/v1/jobs/{job['id']}/exports", json={"format": "hf"}, headers=AUTH)
    export = wait_for_export(two_keys, made.headers["location"])
    assert export["state"] == "failed" and export["error"].startswith("PathNotAllowedError"), export
    assert str(tmp_path) not in export["error"] and export["record"] is None
    assert not (data_root / "o1" / "exports" / "hf").exists()
    # A changed shard: named too.
    shards[0].unlink()
    shards[0].write_bytes(outside.read_bytes()[:-3])
    made = two_keys.post(f"/v1/jobs/{job['id']}/exports", json={"format": "mds"}, headers=AUTH)
    export = wait_for_export(two_keys, made.headers["location"])
    assert export["state"] == "failed" and "does not match the manifest's sha256" in export["error"], export
    assert two_keys.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["state"] == "succeeded"


def test_an_output_being_exported_is_not_overwritten_meanwhile(
    two_keys: TestClient, data_root: Path, monkeypatch: Any
) -> None:
    import service.exports

    job = finished_job(two_keys, data_root)
    real = service.exports.run_export
    release = []

    def slow(config: Any, cancel: Any = None) -> Any:
        while not release:
            time.sleep(0.02)
        return real(config, cancel)

    monkeypatch.setattr(service.exports, "run_export", slow)
    made = two_keys.post(f"/v1/jobs/{job['id']}/exports", json={"format": "hf"}, headers=AUTH)
    body = {"inputs": ["docs.jsonl"], "output": "o1", "overwrite": True, "selection": {"ratio": 0.5}}
    r = two_keys.post("/v1/jobs", json=body, headers=AUTH)
    assert r.status_code == 409 and made.json()["id"] in r.text, r.text
    release.append(True)
    assert wait_for_export(two_keys, made.headers["location"])["state"] == "succeeded"
    assert two_keys.post("/v1/jobs", json=body, headers=AUTH).status_code == 202


def test_an_export_interrupted_by_a_restart_runs_again_or_keeps_what_it_finished(
    make_settings: Callable[..., Settings], engine: FakeEngine, data_root: Path, tmp_path: Path
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings, engine_factory=lambda _s: engine)) as client:
        job = finished_job(client, data_root)
        url = f"/v1/jobs/{job['id']}/exports"
        kept, redone = (client.post(url, json={"format": f}, headers=AUTH).headers["location"] for f in ("hf", "mds"))
        assert all(wait_for_export(client, u)["state"] == "succeeded" for u in (kept, redone))
    # As a process killed mid-export leaves them: both `running`; the hf directory had been renamed
    # into place before the kill, the mds one had not.
    before = (data_root / "o1" / "exports" / "hf" / "export.json").read_bytes()
    shutil.rmtree(data_root / "o1" / "exports" / "mds")
    db = sqlite3.connect(settings.jobs_db)
    db.execute("UPDATE exports SET state = 'running', record = NULL, finished_at = NULL")
    db.commit()
    db.close()

    with TestClient(create_app(settings, engine_factory=lambda _s: engine)) as client:
        for url in (kept, redone):
            export = wait_for_export(client, url)
            assert export["state"] == "succeeded" and export["attempts"] == 2, export
            assert export["record"]["export"] == export["format"]
    assert (data_root / "o1" / "exports" / "hf" / "export.json").read_bytes() == before  # kept, not redone
    assert (data_root / "o1" / "exports" / "mds" / "export.json").is_file()


def test_a_cancelled_export_stops_between_row_groups_and_leaves_no_directory(
    two_keys: TestClient, data_root: Path, monkeypatch: Any
) -> None:
    import service.exports

    job = finished_job(two_keys, data_root)
    real = service.exports.run_export
    started = threading.Event()

    def until_cancelled(config: Any, cancel: Any = None) -> Any:
        # Held until the DELETE reaches the runner, then the real export meets the cancellation
        # at its first row group (the check every exporter goes through).
        started.set()
        assert cancel is not None and cancel.wait(30)
        return real(config, cancel)

    monkeypatch.setattr(service.exports, "run_export", until_cancelled)
    url = f"/v1/jobs/{job['id']}/exports"
    running = two_keys.post(url, json={"format": "mds"}, headers=AUTH).headers["location"]
    queued = two_keys.post(url, json={"format": "hf"}, headers=AUTH).headers["location"]
    assert started.wait(30)
    assert two_keys.delete(running, headers=AUTH2).status_code == 404  # another key's job: unknown
    # A queued export is cancelled at once and never runs.
    r = two_keys.delete(queued, headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
    r = two_keys.delete(running, headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "running" and r.json()["cancel_requested"], r.text
    export = wait_for_export(two_keys, running)
    assert export["state"] == "cancelled" and "cancelled" in export["error"], export
    assert two_keys.delete(running, headers=AUTH).status_code == 409  # nothing left to cancel
    assert not (data_root / "o1" / "exports").exists() or not any((data_root / "o1" / "exports").iterdir())
    assert wait_for_export(two_keys, queued)["attempts"] == 0
    # The format is free again: a new export of it runs to the end.
    monkeypatch.setattr(service.exports, "run_export", real)
    again = two_keys.post(url, json={"format": "mds"}, headers=AUTH)
    assert wait_for_export(two_keys, again.headers["location"])["state"] == "succeeded"


def test_an_export_whose_cancel_was_asked_is_not_redone_after_a_restart(
    make_settings: Callable[..., Settings], engine: FakeEngine, data_root: Path
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings, engine_factory=lambda _s: engine)) as client:
        job = finished_job(client, data_root)
        url = client.post(f"/v1/jobs/{job['id']}/exports", json={"format": "hf"}, headers=AUTH).headers["location"]
        assert wait_for_export(client, url)["state"] == "succeeded"
    # As a process killed after a DELETE flagged the running export leaves it.
    shutil.rmtree(data_root / "o1" / "exports" / "hf")
    db = sqlite3.connect(settings.jobs_db)
    db.execute("UPDATE exports SET state = 'running', record = NULL, finished_at = NULL, cancel_requested = 1")
    db.commit()
    db.close()
    with TestClient(create_app(settings, engine_factory=lambda _s: engine)) as client:
        export = client.get(url, headers=AUTH).json()
        assert export["state"] == "cancelled" and export["attempts"] == 1, export
    assert not (data_root / "o1" / "exports" / "hf").exists()
