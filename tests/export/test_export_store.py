"""Exports from and to an object store (moto's S3 server on loopback): the bytes of a local export,
export.json uploaded last, nothing left by a failed upload, named errors naming the URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus import storage
from corpus.export import ExportConfig, run_export
from corpus.manifest import load_manifest
from scoring.errors import (
    BucketNotFoundError,
    ConfigError,
    InputError,
    StorageCredentialsError,
    StoragePermissionError,
)
from service.cli import main
from tests.corpus.helpers import tree_bytes
from tests.corpus.s3 import (
    MotoServer,
    bucket,
    fresh_fs,
    no_credentials,
    read_only_store,
    remote_tree,
    s3_server,
    upload_dir,
)

__all__ = ["bucket", "s3_server"]  # fixtures, imported for pytest


def export(manifest: str, out: str, fmt: str, **kw: object) -> dict:
    return run_export(ExportConfig(format=fmt, manifest=manifest, out=out, **kw))  # type: ignore[arg-type]


@pytest.fixture
def remote_job(job: Path, bucket: str) -> str:
    upload_dir(job, f"s3://{bucket}/job")
    return f"s3://{bucket}/job"


@pytest.mark.parametrize("fmt", ["mds", "hf", "energon", "megatron"])
def test_store_to_store_export_is_the_local_export(
    job: Path, remote_job: str, tmp_path: Path, tokenizer_dir: Path, fmt: str
) -> None:
    kw = {"tokenizer": str(tokenizer_dir)} if fmt == "megatron" else {}
    local = tmp_path / "local"
    export(str(job), str(local), fmt, **kw)
    out = remote_job.replace("/job", f"/exports/{fmt}")
    record = export(remote_job, out, fmt, **kw)
    got, want = remote_tree(out), tree_bytes(local)
    # What names the manifest and the export's own place differs; every other byte is the same.
    assert json.loads(got.pop("export.json"))["manifest"]["path"] == f"{remote_job}/manifest.json"
    assert record["manifest"]["path"] == f"{remote_job}/manifest.json"
    want.pop("export.json")
    if fmt == "megatron":
        line = got.pop("data_path.txt").decode()
        assert line == want.pop("data_path.txt").decode().replace(str(local.resolve()), out)
    assert got == want


def test_export_record_is_uploaded_last_and_a_failed_upload_leaves_nothing(
    remote_job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = remote_job.replace("/job", "/hf")
    uploaded: list[str] = []
    real = storage.upload_file

    def recording(local: Path, path: storage.RemotePath) -> None:
        uploaded.append(path.url.removeprefix(out + "/"))
        real(local, path)

    monkeypatch.setattr(storage, "upload_file", recording)
    export(remote_job, out, "hf", hf_shard_rows=20)
    assert uploaded[-1] == "export.json" and len(uploaded) == len(remote_tree(out)) > 3

    def failing(local: Path, path: storage.RemotePath) -> None:
        if path.name == "README.md":
            raise OSError("connection reset")
        real(local, path)

    monkeypatch.setattr(storage, "upload_file", failing)
    with pytest.raises(OSError, match="connection reset"):
        export(remote_job, out, "hf", hf_shard_rows=20, overwrite=True)
    assert remote_tree(out) == {}  # the old export went first (export.json before all), the new one never landed


def test_objects_without_a_record_are_named_and_replaced_only_on_overwrite(remote_job: str) -> None:
    out = remote_job.replace("/job", "/mds")
    fresh_fs().pipe_file(f"{out.removeprefix('s3://')}/leftover.mds", b"from a killed upload")
    with pytest.raises(ConfigError, match=r"exists \(objects without export.json: an interrupted export\?\)"):
        export(remote_job, out, "mds")
    export(remote_job, out, "mds", overwrite=True)
    tree = remote_tree(out)
    assert "leftover.mds" not in tree and "export.json" in tree


def test_a_changed_shard_on_the_store_fails_the_export_and_leaves_nothing(job: Path, remote_job: str) -> None:
    shard = load_manifest(job).shards[1].path
    fs = fresh_fs()
    key = f"{remote_job.removeprefix('s3://')}/{shard}"
    fs.pipe_file(key, (job / shard).read_bytes()[:-100] + b"x" * 100)
    out = remote_job.replace("/job", "/hf")
    with pytest.raises(InputError, match=rf"shard '{remote_job}/{shard}' does not match the manifest's sha256"):
        export(remote_job, out, "hf")
    assert remote_tree(out) == {}


def test_store_errors_name_the_url(
    job: Path, remote_job: str, tmp_path: Path, s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BucketNotFoundError, match=r"'s3://no-such-bucket-9/exp'"):
        export(str(job), "s3://no-such-bucket-9/exp", "hf")
    with pytest.raises(BucketNotFoundError, match=r"'s3://no-such-bucket-9/job/manifest.json'"):
        export("s3://no-such-bucket-9/job", str(tmp_path / "hf"), "hf")
    assert not (tmp_path / "hf").exists()
    with (
        no_credentials(monkeypatch, tmp_path),
        pytest.raises(StorageCredentialsError, match=rf"'{remote_job}/manifest.json'"),
    ):
        export(remote_job, str(tmp_path / "hf"), "hf")
    with (
        read_only_store(monkeypatch) as name,
        pytest.raises(StoragePermissionError, match=rf"'s3://{name}/hf/.*' denied"),
    ):
        export(str(job), f"s3://{name}/hf", "hf")


def test_cli_export_to_a_store(remote_job: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = remote_job.replace("/job", "/energon")
    assert main(["export", "--format", "energon", remote_job, "--out", out]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == out
    assert json.loads(remote_tree(out)["export.json"])["export"] == "energon"
    assert main(["export", "--format", "energon", remote_job, "--out", out]) == 2
    assert f"out='{out}' exists" in capsys.readouterr().err


def test_a_cancelled_store_export_uploads_nothing(remote_job: str) -> None:
    import threading

    from scoring.errors import JobCancelledError

    cancel = threading.Event()
    cancel.set()
    out = remote_job.replace("/job", "/mds")
    with pytest.raises(JobCancelledError):
        run_export(ExportConfig(format="mds", manifest=remote_job, out=out), cancel)
    assert remote_tree(out) == {}
