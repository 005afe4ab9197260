"""Jobs over HTTP with a proxy or a cascade: the request's scorer, its directory confined like every path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from scoring.proxy import ProxyScorer
from scoring.proxy.train import auto_band
from tests.scoring.test_proxy import zebra_sample
from tests.service.conftest import AUTH, write_jsonl
from tests.service.test_jobs import submit, wait_for
from tests.service.test_proxy_scores import proxy_dir  # noqa: F401 (a fixture)


@pytest.fixture
def proxy_in_root(proxy_dir: Path, data_root: Path) -> str:  # noqa: F811
    shutil.copytree(proxy_dir, data_root / "models" / "proxy")
    return "proxy:models/proxy"


def test_proxy_job(client: TestClient, data_root: Path, proxy_in_root: str) -> None:
    write_jsonl(data_root / "in.jsonl", 40)
    job = submit(client, inputs=["in.jsonl"], output="out", selection={"ratio": 0.5}, scorer={"scorer": proxy_in_root})
    job = wait_for(client, job["id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    assert job["request"]["scorer"] == {"scorer": proxy_in_root}  # as the client named it, no server path
    manifest = json.loads((data_root / "out" / "manifest.json").read_text())
    assert manifest["fingerprint"]["engine"]["scorer"] == "proxy"
    report = json.loads((data_root / "out" / "report.json").read_text())
    assert report["scorer"]["documents_by_proxy"] == 40 and report["scorer"]["documents_by_pair"] == 0
    shard = pq.read_table(next((data_root / "out" / "shards").iterdir()))
    assert shard.column("teacher_logprob").null_count == shard.num_rows == 20


def test_cascade_job_with_band_auto_is_byte_identical_on_rerun(
    client: TestClient, data_root: Path, proxy_in_root: str
) -> None:
    texts = zebra_sample(40, seed=5).texts  # documents the proxy has a view on
    (data_root / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    # ~100 kept calibration documents bound agreement at 95% confidence below 0.99: ask for less confidence.
    scorer = {"cascade": proxy_in_root, "band": "auto", "agreement": 0.99, "confidence": 0.6, "audit_documents": 5}
    for out in ("a", "b"):
        job = submit(client, inputs=["in.jsonl"], output=out, selection={"ratio": 0.5}, scorer=scorer)
        assert wait_for(client, job["id"], ("succeeded", "failed"))["state"] == "succeeded"
    engine = json.loads((data_root / "a" / "manifest.json").read_text())["fingerprint"]["engine"]
    assert engine["scorer"] == "cascade" and engine["band_auto_agreement"] == 0.99 and engine["band_auto_confidence"] == 0.6
    assert engine["band"] == auto_band(ProxyScorer.load(data_root / "models" / "proxy").model, 0.5, 0.99, 0.6) > 0
    report = json.loads((data_root / "a" / "report.json").read_text())["scorer"]
    assert report["kind"] == "cascade" and report["documents_by_pair"] > 0 and report["audit"]["documents"] == 5
    for name in ("report.json", "shards/part-00000.parquet"):
        assert (data_root / "a" / name).read_bytes() == (data_root / "b" / name).read_bytes(), name


@pytest.mark.parametrize(
    ("scorer", "status", "message"),
    [
        ({"scorer": "proxy:../elsewhere"}, 403, "scorer.scorer: '../elsewhere' contains '..'"),
        ({"cascade": "proxy:/etc"}, 403, "scorer.cascade: '/etc' is outside the data roots"),
        ({"cascade": "proxy:in.jsonl"}, 422, "scorer.cascade: 'in.jsonl' is not a proxy directory"),
        ({"scorer": "proxy:"}, 422, "expected proxy:DIR"),
        ({"cascade": "{p}", "band": 0.2, "agreement": 0.9}, 422, "agreement=0.9 applies to band='auto' only"),
        ({"scorer": "{p}", "band": "auto"}, 422, "applies to a cascade only"),
        # ~100 kept calibration documents cannot promise 0.99 at 95%: refused at submit, not when the job runs.
        ({"cascade": "{p}", "band": "auto", "agreement": 0.99}, 422, "agreement=0.99 is not reached with confidence 0.95"),
        ({"cascade": "{p}", "band": "auto", "confidence": 1.0}, 422, "confidence"),
    ],
)
def test_bad_scorers_are_refused_naming_the_field(
    client: TestClient, data_root: Path, proxy_in_root: str, scorer: dict[str, object], status: int, message: str
) -> None:
    write_jsonl(data_root / "in.jsonl", 4)
    scorer = {k: v.format(p=proxy_in_root) if isinstance(v, str) else v for k, v in scorer.items()}
    r = client.post("/v1/jobs", json={"inputs": ["in.jsonl"], "output": "out", "scorer": scorer}, headers=AUTH)
    assert r.status_code == status, r.text
    assert message in r.text
    assert not (data_root / "out").exists()


def test_a_cascade_with_a_soft_selection_is_refused(client: TestClient, data_root: Path, proxy_in_root: str) -> None:
    write_jsonl(data_root / "in.jsonl", 4)
    body = {"inputs": ["in.jsonl"], "output": "out", "selection": {"method": "soft"}, "scorer": {"cascade": proxy_in_root}}
    r = client.post("/v1/jobs", json=body, headers=AUTH)
    assert r.status_code == 422 and "the cascade's band surrounds the threshold" in r.json()["detail"]
