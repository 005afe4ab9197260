"""`reweigh score -o` and `reweigh distill` with their inputs and outputs in an object store (moto's
S3 server on loopback): the bytes of the local runs, nothing partial, errors naming the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import storage
from corpus.config import RewriteConfig
from corpus.rewrite import run_rewrite
from scoring.proxy import ProxyScorer
from scoring.proxy.model import directory_sha256
from service.cli import main
from service.commands.distill import _score_tables
from tests.cli.test_distill_cli import _distill, scored
from tests.corpus.fakes import FakeSpec
from tests.corpus.helpers import make_rows, write_jsonl
from tests.corpus.s3 import MotoServer, bucket, fresh_fs, remote_tree, s3_server, upload_dir

__all__ = ["bucket", "s3_server", "scored"]  # fixtures, imported for pytest


def _score(tiny_pair, out: str, *inputs: str) -> int:
    teacher, reference = tiny_pair
    return main(["score", "--teacher", str(teacher), "--reference", str(reference), "--dtype", "float32",
                 "-o", out, *inputs])


def test_score_and_distill_from_and_to_a_bucket(tiny_pair, scored, bucket: str, tmp_path: Path) -> None:
    texts, local_scores = scored
    fs = fresh_fs()
    for name in ("a", "b"):  # the same documents twice, found by a pattern over the bucket
        fs.pipe_file(f"{bucket}/in/{name}.jsonl", texts.read_bytes())
    assert _score(tiny_pair, f"s3://{bucket}/scores/both.parquet", f"s3://{bucket}/in/*.jsonl") == 0
    assert _score(tiny_pair, f"s3://{bucket}/scores/a.parquet", f"s3://{bucket}/in/a.jsonl") == 0
    got = remote_tree(f"s3://{bucket}/scores")
    assert got["a.parquet"] == local_scores.read_bytes()  # byte for byte the local run's output
    assert list(got) == ["a.parquet", "both.parquet"]  # no scratch file left in the bucket

    assert _distill(tiny_pair, f"s3://{bucket}/in/a.jsonl", f"s3://{bucket}/scores/a.parquet",
                    f"s3://{bucket}/proxy") == 0
    assert _distill(tiny_pair, texts, local_scores, tmp_path / "local-proxy") == 0
    proxy = tmp_path / "downloaded"
    for key, data in remote_tree(f"s3://{bucket}/proxy").items():
        (proxy / key).parent.mkdir(parents=True, exist_ok=True)
        (proxy / key).write_bytes(data)
    assert directory_sha256(proxy) == directory_sha256(tmp_path / "local-proxy")
    assert ProxyScorer.load(proxy).fingerprint == ProxyScorer.load(tmp_path / "local-proxy").fingerprint


def test_distill_uploads_proxy_json_last(tiny_pair, scored, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    texts, local_scores = scored
    uploaded: list[str] = []
    real = storage.upload_file

    def recording(local: Path, path: storage.RemotePath) -> None:
        uploaded.append(path.name)
        real(local, path)

    monkeypatch.setattr(storage, "upload_file", recording)
    assert _distill(tiny_pair, texts, local_scores, f"s3://{bucket}/proxy") == 0
    assert uploaded[-1] == "proxy.json" and "agreement.json" in uploaded[:-1]


def test_distill_reads_a_rewrite_jobs_checkpoints_from_a_bucket(tmp_path: Path, bucket: str) -> None:
    job = tmp_path / "job"
    run_rewrite(RewriteConfig(inputs=[str(write_jsonl(tmp_path / "in.jsonl", make_rows(30)))], output=str(job),
                              chunk_docs=8), FakeSpec())
    upload_dir(job, f"s3://{bucket}/job")
    local, fingerprint = _score_tables([job])
    remote, remote_fingerprint = _score_tables([storage.job_path(f"s3://{bucket}/job")])
    assert remote.num_rows == 30 and len(list(job.glob("scores/*/chunk-*.parquet"))) == 4
    assert remote.equals(local) and remote_fingerprint == fingerprint


def test_missing_bucket_is_named_before_the_models_load(
    tiny_pair, scored, s3_server: MotoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts, local_scores = scored
    assert _score(tiny_pair, "s3://no-such-bucket-3/s.parquet", str(texts)) == 2
    assert "bucket 'no-such-bucket-3' of 's3://no-such-bucket-3/s.parquet' does not exist" in capsys.readouterr().err
    assert _score(tiny_pair, str(tmp_path / "s.parquet"), "s3://no-such-bucket-3/in.jsonl") == 2
    assert "'s3://no-such-bucket-3/in.jsonl' does not exist" in capsys.readouterr().err
    assert _distill(tiny_pair, texts, local_scores, "s3://no-such-bucket-3/proxy") == 2
    assert "'s3://no-such-bucket-3/proxy' does not exist" in capsys.readouterr().err
    assert _distill(tiny_pair, texts, "s3://no-such-bucket-3/s.parquet", tmp_path / "proxy") == 2
    assert "'s3://no-such-bucket-3/s.parquet'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
