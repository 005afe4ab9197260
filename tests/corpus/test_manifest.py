"""Manifest: round trip, relative shard resolution, per-rank shares, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.manifest import (
    Manifest,
    ShardEntry,
    Totals,
    load_manifest,
    resolve_shard,
    shard_base,
    write_manifest,
)
from scoring.errors import InputError, NotFoundError


def manifest(n_shards: int = 5) -> Manifest:
    shards = [
        ShardEntry(
            path=f"shards/part-{i:05d}.parquet",
            rows=10 + i,
            documents=12 + i,
            tokens=100 * i,
            bytes=1000,
            sha256="0" * 64,
        )
        for i in range(n_shards)
    ]
    totals = Totals(
        documents_in=100,
        tokens_in=9999,
        rows_out=sum(s.rows for s in shards),
        documents_out=sum(s.documents for s in shards),
        tokens_out=sum(s.tokens for s in shards),
    )
    return Manifest(fingerprint={"digest": "abc"}, columns=["text", "score"], shards=shards, totals=totals)


def test_round_trip_and_stable_bytes(tmp_path: Path) -> None:
    m = manifest()
    path = write_manifest(tmp_path, m)
    assert load_manifest(path) == m == load_manifest(tmp_path)
    assert path.read_bytes() == m.to_json_bytes()
    assert not list(tmp_path.glob(".*tmp"))


def test_shard_base_rules(tmp_path: Path) -> None:
    assert shard_base(tmp_path / "manifest.json") == str(tmp_path)
    assert shard_base(tmp_path) == str(tmp_path)
    assert shard_base("https://h/x/manifest.json") == "https://h/x/"
    assert shard_base("https://h/v1/manifests/j1") == "https://h/v1/manifests/j1/"
    assert (
        resolve_shard("https://h/v1/manifests/j1/", "shards/part-00000.parquet")
        == "https://h/v1/manifests/j1/shards/part-00000.parquet"
    )
    assert resolve_shard(str(tmp_path), "shards/a.parquet") == str(tmp_path / "shards" / "a.parquet")
    with pytest.raises(InputError, match="escapes"):
        resolve_shard(str(tmp_path), "../elsewhere.parquet")


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_for_rank_covers_every_shard_once(world_size: int) -> None:
    m = manifest(5)
    shares = [m.for_rank(r, world_size) for r in range(world_size)]
    paths = [s.path for share in shares for s in share.shards]
    assert sorted(paths) == [s.path for s in m.shards]
    assert sum(share.totals.documents_out for share in shares) == m.totals.documents_out
    assert max(len(s.shards) for s in shares) - min(len(s.shards) for s in shares) <= 1
    assert all(share.partition is not None and share.partition.world_size == world_size for share in shares)
    with pytest.raises(InputError, match="rank=3"):
        m.for_rank(3, 3)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not finished"):
        load_manifest(tmp_path)
    bad = tmp_path / "manifest.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        load_manifest(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a reweigh manifest"):
        load_manifest(bad)
    body = json.loads(manifest().to_json_bytes())
    body["format_version"] = 99
    bad.write_text(json.dumps(body))
    with pytest.raises(InputError, match="format_version=99"):
        load_manifest(bad)
