"""The /ui dashboard on the fake engine (tests/service/test_dashboard.py loads
the dashboard in a real headless Chromium against a live service)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.service.conftest import AUTH, KEY, write_jsonl
from tests.service.test_exports import wait_for_export
from tests.service.test_jobs import wait_for


def finished_job(client: TestClient, data_root: Path) -> dict:
    src = write_jsonl(data_root / "in" / "a.jsonl", 30)
    body = {"inputs": [str(src)], "output": str(data_root / "out"), "shard_rows": 7}
    job = client.post("/v1/jobs", json=body, headers=AUTH).json()
    return wait_for(client, job["id"], ("succeeded",))


def test_dashboard_needs_the_key_and_shows_the_job(client: TestClient, data_root: Path) -> None:
    job = finished_job(client, data_root)
    assert client.get("/ui").status_code == 401
    assert client.post("/ui/login", data={"key": "wrong"}).status_code == 401
    page = client.get("/ui", headers=AUTH).text
    assert job["id"] in page and "succeeded" in page
    # The form keeps the key in an HttpOnly cookie limited to /ui.
    login = client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert (
        "HttpOnly" in cookie
        and "Path=/ui" in cookie
        and "SameSite=strict" in cookie.replace("Strict", "strict")
    )
    detail = client.get(f"/ui/jobs/{job['id']}", cookies={"reweigh_key": KEY}).text
    assert "score_histogram.png" in detail and 'id="diagnostics"' in detail  # every report now carries them
    assert (
        client.get(f"/v1/jobs/{job['id']}", cookies={"reweigh_key": KEY}).status_code == 401
    )  # /v1: header only
    plot = client.get(f"/ui/jobs/{job['id']}/plots/score_histogram.png", headers=AUTH)
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
    assert client.get(f"/ui/jobs/{job['id']}/plots/..%2Fmanifest.json", headers=AUTH).status_code == 404


def test_dashboard_shows_pair_diagnostics_when_the_report_has_them(
    client: TestClient, data_root: Path
) -> None:
    job = finished_job(client, data_root)
    report = data_root / "out" / "report.json"
    report.write_text(
        json.dumps(
            {**json.loads(report.read_text()), "pair_diagnostics": {"spearman_teacher_reference": 0.42}}
        )
    )
    detail = client.get(f"/ui/jobs/{job['id']}", headers=AUTH).text
    assert "spearman_teacher_reference" in detail and "0.42" in detail


def test_dashboard_lists_a_finished_export(client: TestClient, data_root: Path) -> None:
    job = finished_job(client, data_root)
    made = client.post(f"/v1/jobs/{job['id']}/exports", json={"format": "mds"}, headers=AUTH)
    assert made.status_code == 202, made.text
    wait_for_export(client, made.headers["location"])
    page = client.get(f"/ui/jobs/{job['id']}", headers=AUTH).text
    assert f'id="export-{made.json()["id"]}"' in page and "mds export" in page and "load_mds.py" in page
    assert "out/exports/mds" in page and str(data_root) not in page  # relative to the data root
    failed = client.post(f"/v1/jobs/{job['id']}/exports", json={"format": "megatron"}, headers=AUTH)
    assert wait_for_export(client, failed.headers["location"])["state"] == "failed"  # no teacher here
    assert "tokenizes: give tokenizer=" in client.get(f"/ui/jobs/{job['id']}", headers=AUTH).text


def test_dashboard_reads_a_job_s_files_confined_to_the_data_roots(
    client: TestClient, data_root: Path, tmp_path: Path
) -> None:
    job = finished_job(client, data_root)
    plot, report = data_root / "out" / "score_histogram.png", data_root / "out" / "report.json"
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG outside content")
    plot.unlink()
    plot.symlink_to(secret)
    r = client.get(f"/ui/jobs/{job['id']}/plots/score_histogram.png", headers=AUTH)
    assert r.status_code == 403 and b"outside content" not in r.content
    (tmp_path / "report.json").write_text(report.read_text())
    report.unlink()
    report.symlink_to(tmp_path / "report.json")
    page = client.get(f"/ui/jobs/{job['id']}", headers=AUTH)
    assert page.status_code == 403 and str(tmp_path) not in page.text
