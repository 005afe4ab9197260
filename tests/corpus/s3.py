"""A real S3 HTTP API on loopback for the object-store tests: moto's standalone server (moto[server])
in a child process, reached by s3fs/botocore through the usual environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), exactly as a user's job reaches a real store."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance-metadata credentials lookup
}


class MotoServer:
    """`python -m moto.server` on a free loopback port; `env` goes to the server process (e.g.
    INITIAL_NO_AUTH_ACTION_COUNT, which makes it enforce IAM after that many requests)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fresh_fs(**kwargs: Any) -> Any:
    """An s3fs filesystem built now, from the environment as it is now (fsspec caches instances,
    and with them the credentials they found)."""
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    return fsspec.filesystem("s3", **kwargs)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    pytest.importorskip("moto.server", reason="needs moto[server] (the dev extra)")
    server = MotoServer()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**ENV, "AWS_ENDPOINT_URL": server.url}.items():
            mp.setenv(key, value)
        yield server
    server.stop()


@pytest.fixture
def bucket(s3_server: MotoServer) -> str:
    """A new, empty bucket: its name."""
    name = f"reweigh-{uuid.uuid4().hex[:12]}"
    fresh_fs().mkdir(name)
    return name


def upload_dir(local: Path, url: str) -> None:
    fs = fresh_fs()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(
                f"{url.removeprefix('s3://')}/{path.relative_to(local).as_posix()}", path.read_bytes()
            )


def remote_tree(url: str) -> dict[str, bytes]:
    """Every object under `url` (relative key -> bytes)."""
    fs = fresh_fs()
    prefix = url.removeprefix("s3://").rstrip("/") + "/"
    return {key[len(prefix) :]: fs.cat_file(key) for key in sorted(fs.find(prefix))}


@contextlib.contextmanager
def read_only_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A second server that enforces IAM after its first 4 requests, which create a bucket and a
    user allowed to read and list it only; the environment holds that user's keys. Yields the bucket."""
    import boto3

    server = MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        iam, s3 = boto3.client("iam"), boto3.client("s3")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:Get*", "s3:List*", "s3:HeadBucket"],
                    "Resource": ["arn:aws:s3:::read-only", "arn:aws:s3:::read-only/*"],
                }
            ],
        }
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
        s3.create_bucket(Bucket="read-only")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        fresh_fs()
        yield "read-only"
    finally:
        server.stop()
        monkeypatch.undo()
        fresh_fs()


@contextlib.contextmanager
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No S3 credentials anywhere the client looks (environment, files)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    fresh_fs()  # drop the cached filesystem that holds the credentials found before
    try:
        yield
    finally:
        monkeypatch.undo()
        fresh_fs()
