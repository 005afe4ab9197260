"""Jobs on an object store (moto's S3 server on loopback): the bytes of a local run, resume after
SIGKILL, the loader streaming from a bucket, and named errors that say which URL failed."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

import corpus.rewrite
import corpus.scores
import corpus.shard_fetch
import corpus.steps.write
import corpus.storage
from corpus import confine, storage
from corpus.config import RewriteConfig, SelectionConfig
from corpus.loader import ManifestDataset
from corpus.rewrite import run_rewrite
from scoring.errors import (
    BucketNotFoundError,
    ConfigError,
    InputError,
    PathNotAllowedError,
    StorageCredentialsError,
    StoragePermissionError,
)
from scoring.protocols import BuiltScorer
from tests.corpus.fakes import FakeEngine, FakeSpec
from tests.corpus.golden import case_config
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl
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

_fork = multiprocessing.get_context("fork")


def _as_remote(
    local: dict[str, bytes], remote: dict[str, bytes], local_in: Path, remote_in: str
) -> dict[str, bytes]:
    """A local job's files with its input directory spelled as the bucket's (markers, report and
    manifest name their inputs), and so its later steps' folders named for those (steps/select-<digest
    of the scoring results>)."""

    def digest(files: dict[str, bytes]) -> str:
        # steps/select-<12 hex digits>[-<pass>]/...
        return (
            next(k for k in files if k.startswith("steps/select-")).split("/")[1].removeprefix("select-")[:12]
        )

    old, new = digest(local), digest(remote)
    return {
        k.replace(old, new): v.replace(str(local_in).encode(), remote_in.encode()).replace(
            old.encode(), new.encode()
        )
        for k, v in local.items()
    }


def test_s3_to_s3_rewrite_is_byte_identical_to_local(tmp_path: Path, bucket: str) -> None:
    # The golden case with every input format, duplicates across inputs, bad lines and an unreadable
    # input skipped: inputs given as one glob over the bucket (sorted, so in the same order).
    local_in, local_out = tmp_path / "in", tmp_path / "out"
    config = case_config("top_fraction_guards", local_in, local_out)
    run_rewrite(config, FakeSpec())
    upload_dir(local_in, f"s3://{bucket}/in")
    remote = config.model_copy(update={"inputs": [f"s3://{bucket}/in/*"], "output": f"s3://{bucket}/out"})

    result = run_rewrite(remote, FakeSpec())

    got = remote_tree(f"s3://{bucket}/out")
    want = _as_remote(tree_bytes(local_out), got, local_in, f"s3://{bucket}/in")
    assert set(got) == set(want)
    for name in sorted(want):
        if name != "job.json":  # the inputs' identity: mtime locally, ETag on the store
            assert got[name] == want[name], name
    assert [i.path for i in result.manifest.inputs] == [
        f"s3://{bucket}/in/{n}" for n in ("a.jsonl", "b.jsonl.zst", "c.parquet")
    ]
    assert json.loads(got["job.json"])["inputs"][0]["version"]  # the ETag, so a changed input is noticed
    again = run_rewrite(remote, FakeSpec())
    assert again.already_done and again.manifest == result.manifest


def _child(config: RewriteConfig, kill_at: tuple[Any, str, int] | None) -> None:
    if kill_at is not None:
        module, name, n = kill_at
        original, calls = getattr(module, name), [0]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(module, name, wrapper)
    run_rewrite(config, BuiltScorer(FakeEngine()))
    os._exit(0)


def _run_child(config: RewriteConfig, kill_at: tuple[Any, str, int] | None = None) -> int | None:
    proc = _fork.Process(target=_child, args=(config, kill_at))
    proc.start()
    proc.join(120)
    return proc.exitcode


@pytest.mark.slow
def test_sigkill_then_resume_on_s3_is_byte_identical(tmp_path: Path, bucket: str) -> None:
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", make_rows(100, prefix="a"), extra_lines=[b"{broken"])
    write_jsonl(d / "b.jsonl.zst", make_rows(70, prefix="b"))
    upload_dir(d, f"s3://{bucket}/in")
    inputs = [f"s3://{bucket}/in/a.jsonl", f"s3://{bucket}/in/b.jsonl.zst"]

    def config(out: str) -> RewriteConfig:
        return RewriteConfig(inputs=inputs, output=f"s3://{bucket}/{out}", chunk_docs=32, shard_rows=20)

    assert _run_child(config("ref")) == 0
    out = config("out")
    kill_points = [
        (corpus.scores, "score_chunk", 3),  # mid-scoring, between chunks
        (corpus.storage, "write_json", 3),  # both inputs scored, the second's marker not written
        (corpus.steps.write, "parquet_bytes", 3),  # two output shards uploaded
        (corpus.rewrite, "write_manifest", 1),  # everything but the manifest
    ]
    for module, name, n in kill_points:
        assert _run_child(out, (module, name, n)) == -signal.SIGKILL, f"not killed at {name} {n}"
        assert "manifest.json" not in remote_tree(out.output), f"a manifest after a kill at {name}"
    assert _run_child(out) == 0
    assert remote_tree(out.output) == remote_tree(config("ref").output)


@pytest.fixture(scope="module")
def local_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter[str]]:
    """A finished job with repeats, in 14 shards, and the multiset of ids an epoch yields."""
    d = tmp_path_factory.mktemp("job")
    path = write_jsonl(d / "in.jsonl", make_rows(120))
    sel = SelectionConfig(method="soft", temperature=0.5, max_weight=3.0, target_documents=160)
    result = run_rewrite(
        RewriteConfig(inputs=[str(path)], output=str(d / "out"), selection=sel, shard_rows=9), FakeSpec()
    )
    want: Counter[str] = Counter()
    for s in result.manifest.shards:
        for row in storage.read_parquet(d / "out" / s.path, ["id", "repeats"]).to_pylist():
            want[row["id"]] += row["repeats"]
    assert sum(want.values()) == 160
    return d / "out", want


def test_loader_streams_a_job_copied_to_a_bucket(local_job: tuple[Path, Counter[str]], bucket: str) -> None:
    """2 ranks x 2 workers read the exact multiset of the job's documents (with repeats) from s3,
    a job directory copied to the store as it is (relative layout)."""
    job, want = local_job
    upload_dir(job, f"s3://{bucket}/job")
    seen: Counter[str] = Counter()
    for rank in range(2):
        ds = ManifestDataset(f"s3://{bucket}/job", rank=rank, world_size=2, seed=3, batch_size=4)
        dl = DataLoader(
            ds, batch_size=4, num_workers=2, collate_fn=lambda b: b, multiprocessing_context="fork"
        )
        seen.update(row["id"] for batch in dl for row in batch)
    assert seen == want


def _cached_bytes(directory: Path) -> int:
    # The prefetch thread admits and evicts while the test reads rows, so a file listed by glob
    # may be gone by the time it is stat'ed: it is no longer in the cache and counts nothing.
    total = 0
    for path in directory.glob("*.parquet"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_loader_cache_serves_later_epochs_and_stays_under_its_limit(
    local_job: tuple[Path, Counter[str]], bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, want = local_job
    upload_dir(job, f"s3://{bucket}/job")
    url = f"s3://{bucket}/job"
    shards = sorted((s.bytes for s in ManifestDataset(url).manifest.shards), reverse=True)

    # A limit that holds every shard: the second epoch downloads nothing.
    roomy = ManifestDataset(url, cache_dir=tmp_path / "roomy", cache_limit_bytes=sum(shards))
    assert Counter(row["id"] for row in roomy) == want
    assert len(list((tmp_path / "roomy").glob("*.parquet"))) == len(shards)

    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("downloaded a cached shard")

    with monkeypatch.context() as mp:
        mp.setattr(corpus.shard_fetch, "_download_object", no_download)
        roomy.set_epoch(1)
        assert Counter(row["id"] for row in roomy) == want

    # The smallest limit allowed (the shard read and the one prefetched): evicts as it goes.
    limit = shards[0] + shards[1]
    tight = ManifestDataset(url, cache_dir=tmp_path / "tight", cache_limit_bytes=limit)
    seen: Counter[str] = Counter()
    for epoch in range(2):
        tight.set_epoch(epoch)
        for row in tight:
            seen[row["id"]] += 1
            assert _cached_bytes(tmp_path / "tight") <= limit
    assert seen == want + want
    with pytest.raises(ConfigError, match=f"cache_limit_bytes={limit - 1} is below"):
        ManifestDataset(url, cache_dir=tmp_path / "tight", cache_limit_bytes=limit - 1)


# 4 workers on a 2-core machine is the point (they must share one download), not an oversight.
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_workers_sharing_a_cache_download_each_shard_once(
    local_job: tuple[Path, Counter[str]], bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 DataLoader workers of one node reach the same shards together: one download each."""
    job, want = local_job
    url = f"s3://{bucket}/job"
    upload_dir(job, url)
    log = tmp_path / "downloads.log"
    download = corpus.shard_fetch._download_object

    def logged(location: str, directory: str | None) -> Any:
        with log.open("a") as fh:
            fh.write(location + "\n")
        return download(location, directory)

    monkeypatch.setattr(corpus.shard_fetch, "_download_object", logged)  # inherited by the forked workers
    ds = ManifestDataset(url, batch_size=2, cache_dir=tmp_path / "cache", cache_limit_bytes=1 << 30)
    dl = DataLoader(ds, batch_size=2, num_workers=4, collate_fn=lambda b: b, multiprocessing_context="fork")
    assert Counter(row["id"] for batch in dl for row in batch) == want
    downloads = log.read_text().splitlines()
    assert sorted(downloads) == sorted({*downloads}) and len(downloads) == len(ds.manifest.shards)


class _DiesOnSecondChunk:
    """A sha256 whose second update kills the process: a loader killed mid-download."""

    def __init__(self) -> None:
        self.updates = 0

    def update(self, data: bytes) -> None:
        self.updates += 1
        if self.updates == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def _download_then_die(url: str, cache: Path) -> None:
    corpus.shard_fetch._CHUNK = 1024
    corpus.shard_fetch.hashlib = type("hashlib", (), {"sha256": _DiesOnSecondChunk})  # type: ignore[assignment]
    ds = ManifestDataset(url, cache_dir=cache, cache_limit_bytes=1 << 30, shuffle=False)
    next(iter(ds))
    os._exit(0)


def test_a_killed_download_leaves_a_part_file_that_the_next_open_removes(
    local_job: tuple[Path, Counter[str]], bucket: str, tmp_path: Path
) -> None:
    job, want = local_job
    url = f"s3://{bucket}/job"
    upload_dir(job, url)
    cache = tmp_path / "cache"
    proc = _fork.Process(target=_download_then_die, args=(url, cache))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    [orphan] = cache.glob("*.part")
    assert not list(cache.glob("*.parquet"))  # a part is never taken for a shard

    # Within the grace period a .part may be a download that has not locked it yet: kept.
    ManifestDataset(url, cache_dir=cache, cache_limit_bytes=1 << 30)
    assert orphan.exists()
    # Older than that and unlocked: the process died. A locked one belongs to a live download.
    live = cache / "reweigh-shard-live.part"
    live.write_bytes(b"being written")
    old = orphan.stat().st_mtime - 2 * corpus.shard_fetch.ORPHAN_GRACE_S
    for path in (orphan, live):
        os.utime(path, (old, old))
    with live.open("rb") as held:
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX)
        ds = ManifestDataset(url, cache_dir=cache, cache_limit_bytes=1 << 30)
        assert not orphan.exists() and live.exists()
        assert Counter(row["id"] for row in ds) == want
    assert sorted(p.name for p in cache.glob("*.part")) == [live.name]


def test_any_fsspec_filesystem_serves_a_job(tmp_path: Path) -> None:
    """The layer is fsspec's, not S3's: a job from and to fsspec's in-memory filesystem
    (memory://, no buckets) has the local run's bytes, and the loader and exports read it."""
    import uuid

    import fsspec

    from corpus.export import ExportConfig, run_export

    local_in, local_out = tmp_path / "in", tmp_path / "out"
    config = case_config("top_fraction_guards", local_in, local_out)
    run_rewrite(config, FakeSpec())
    root = f"memory://reweigh-{uuid.uuid4().hex[:8]}"
    memory = fsspec.filesystem("memory")
    for path in sorted(local_in.iterdir()):
        memory.pipe_file(f"{root}/in/{path.name}", path.read_bytes())
    inputs = [f"{root}/in/{Path(p).name}" for p in config.inputs]
    remote = config.model_copy(update={"inputs": inputs, "output": f"{root}/out"})
    result = run_rewrite(remote, FakeSpec())

    prefix = root.removeprefix("memory://")
    got = {
        key.split(f"{prefix}/out/", 1)[1]: memory.cat_file(key) for key in memory.find(f"{prefix}/out")
    }
    want = _as_remote(tree_bytes(local_out), got, local_in, f"{root}/in")
    assert set(got) == set(want)
    assert all(got[name] == want[name] for name in want if name != "job.json")
    assert run_rewrite(remote, FakeSpec()).already_done

    rows = Counter(row["id"] for row in ManifestDataset(f"{root}/out", seed=1))
    assert sum(rows.values()) == result.manifest.totals.documents_out
    # Exports between the two (a file:// URL is a local path), export.json uploaded last.
    record = run_export(ExportConfig(format="hf", manifest=f"{root}/out", out=f"file://{tmp_path}/hf"))
    assert (tmp_path / "hf" / "export.json").is_file() and record["manifest"]["path"] == f"{root}/out/manifest.json"
    run_export(ExportConfig(format="hf", manifest=f"file://{local_out}", out=f"{root}/hf"))
    exported = {key.split(f"{prefix}/hf/", 1)[1]: memory.cat_file(key) for key in memory.find(f"{prefix}/hf")}
    want_export = tree_bytes(tmp_path / "hf")
    assert exported.pop("export.json") and want_export.pop("export.json")
    assert exported == want_export


# ------------------------------------------------------------------------------------------- errors


def _job(tmp_path: Path, output: str, inputs: list[str] | None = None) -> RewriteConfig:
    if inputs is None:
        inputs = [str(write_jsonl(tmp_path / "in.jsonl", make_rows(10)))]
    return RewriteConfig(inputs=inputs, output=output)


def test_missing_bucket_names_the_url(tmp_path: Path, s3_server: MotoServer) -> None:
    with pytest.raises(BucketNotFoundError, match=r"'s3://no-such-bucket-7/out'"):
        run_rewrite(_job(tmp_path, "s3://no-such-bucket-7/out"), FakeSpec())
    with pytest.raises(BucketNotFoundError, match=r"'s3://no-such-bucket-7/in.jsonl'"):
        run_rewrite(_job(tmp_path, str(tmp_path / "out"), ["s3://no-such-bucket-7/in.jsonl"]), FakeSpec())


def test_missing_input_object_and_empty_pattern(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(InputError, match=rf"'s3://{bucket}/nothing.jsonl' does not exist"):
        run_rewrite(_job(tmp_path, str(tmp_path / "out"), [f"s3://{bucket}/nothing.jsonl"]), FakeSpec())
    with pytest.raises(InputError, match=rf"'s3://{bucket}/in/\*.parquet' matches nothing"):
        run_rewrite(_job(tmp_path, str(tmp_path / "out"), [f"s3://{bucket}/in/*.parquet"]), FakeSpec())


def test_missing_credentials_names_the_url(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        no_credentials(monkeypatch, tmp_path),
        pytest.raises(StorageCredentialsError, match=rf"'s3://{bucket}/out'.*AWS_ACCESS_KEY_ID"),
    ):
        run_rewrite(_job(tmp_path, f"s3://{bucket}/out"), FakeSpec())


def test_permission_denied_names_the_url(
    tmp_path: Path, s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        read_only_store(monkeypatch) as name,
        pytest.raises(StoragePermissionError, match=rf"'s3://{name}/out/job.json' denied"),
    ):
        run_rewrite(_job(tmp_path, f"s3://{name}/out"), FakeSpec())


def test_service_maps_storage_errors_to_http() -> None:
    from service.errors import status_for

    assert status_for(BucketNotFoundError("b")) == 404
    assert status_for(StoragePermissionError("p")) == 403
    assert status_for(StorageCredentialsError("c")) == 502


# ----------------------------------------------------------------------------- confinement, globs


def test_url_data_roots_confine_store_access(bucket: str) -> None:
    root = f"s3://{bucket}/data"
    fresh_fs().pipe_file(f"{bucket}/data/x.json", b"{}")
    fresh_fs().pipe_file(f"{bucket}/other/x.json", b"{}")
    with confine.confined_to([Path("/nonexistent-root"), root]):
        assert storage.read_json(storage.job_path(f"{root}/x.json")) == {}
        for url in (f"s3://{bucket}/other/x.json", f"{root}/../other/x.json", f"{root}x/x.json"):
            with pytest.raises(PathNotAllowedError, match="outside the data roots"):
                storage.read_bytes(storage.job_path(url))
    # No URL root: no store at all.
    with confine.confined_to([Path("/nonexistent-root")]), pytest.raises(PathNotAllowedError):
        storage.read_bytes(storage.job_path(f"{root}/x.json"))


def test_local_globs_expand_sorted_and_literal_names_win(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c*.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert storage.expand_inputs([str(tmp_path / "[ab].jsonl")]) == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]
    assert storage.expand_inputs([str(tmp_path / "c*.jsonl")]) == [str(tmp_path / "c*.jsonl")]
    with pytest.raises(InputError, match="matches nothing"):
        storage.expand_inputs([str(tmp_path / "z*.jsonl")])


def test_locations() -> None:
    assert storage.job_path("file:///tmp/x/") == Path("/tmp/x") and storage.job_path("rel/x") == Path("rel/x")
    job = storage.job_path("s3://b/jobs/x/")
    assert (
        isinstance(job, storage.RemotePath)
        and str(job / "shards" / "p.parquet") == "s3://b/jobs/x/shards/p.parquet"
    )
    assert (job / "a").parent == job and job.bucket == "b" and job.name == "x"
    assert [storage.is_remote(u) for u in ("gs://b/x", "hf://datasets/o/n", "https://h/x", "/a:b", "C")] == [
        True,
        True,
        False,
        False,
        False,
    ]
