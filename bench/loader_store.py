"""Bytes the loader fetches from an object store for one epoch, against the bytes its reads need:
whether ranged reads (fetching only the row groups read) would pay over whole-shard downloads.

    .venv/bin/python bench/loader_store.py                       # moto's S3 server on loopback
    .venv/bin/python bench/loader_store.py --documents 50000 --ranks 2 --workers 4 --shard-rows 20000

Builds a manifest (bench/loader.py's corpus, soft selection), uploads it, and reads one epoch with
R ranks x W DataLoader workers (fork) from the store, with no cache (each worker fetches its own
copy) and with one cache directory shared by the workers of a rank (a node). Prints per setting:
- fetched: bytes downloaded (whole shards, each sha256-checked as it arrives);
- needed: what a ranged reader would have fetched at least: each opened shard's footer plus the
  column chunks of the row groups the loader reads (`repeats` of every group, the wanted columns of
  the groups holding the worker's samples);
- the epoch's wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq
from torch.utils.data import DataLoader

import corpus.shard_fetch
from bench.loader import build_manifest, cpu
from corpus.loader import ManifestDataset
from tests.corpus.s3 import ENV, MotoServer, fresh_fs

_LOG: Path | None = None


def _log(kind: str, n: int) -> None:
    assert _LOG is not None
    with _LOG.open("a") as fh:  # one short line per append: whole lines even from several processes
        fh.write(f"{kind} {n}\n")


def _instrument() -> None:
    """Counts downloads and the column-chunk bytes of every row-group read, in whichever process."""
    download = corpus.shard_fetch._download_object

    def counted_download(url: str, directory: str | None) -> Any:
        path, digest = download(url, directory)
        _log("fetched", path.stat().st_size)
        return path, digest

    corpus.shard_fetch._download_object = counted_download  # type: ignore[assignment]
    read_row_group = pq.ParquetFile.read_row_group
    opened = pq.ParquetFile.__init__

    def counted_init(self: pq.ParquetFile, source: Any, *args: Any, **kwargs: Any) -> None:
        opened(self, source, *args, **kwargs)
        _log("needed", self.metadata.serialized_size + 8)  # the footer, its length and magic

    def counted_read(self: pq.ParquetFile, i: int, columns: list[str] | None = None, **kwargs: Any) -> Any:
        group = self.metadata.row_group(i)
        wanted = None if columns is None else set(columns)
        _log("needed", sum(
            group.column(c).total_compressed_size
            for c in range(group.num_columns)
            if wanted is None or group.column(c).path_in_schema.split(".")[0] in wanted
        ))
        return read_row_group(self, i, columns=columns, **kwargs)

    pq.ParquetFile.__init__ = counted_init  # type: ignore[method-assign]
    pq.ParquetFile.read_row_group = counted_read  # type: ignore[method-assign]


def epoch(url: str, ranks: int, workers: int, batch: int, cache: Path | None, columns: list[str] | None) -> dict[str, float]:
    assert _LOG is not None
    _LOG.write_text("")
    started = time.perf_counter()
    rows = 0
    for rank in range(ranks):
        kw: dict[str, Any] = {}
        if cache is not None:
            kw = {"cache_dir": cache / f"node{rank}", "cache_limit_bytes": 1 << 40}
        ds = ManifestDataset(url, rank=rank, world_size=ranks, batch_size=batch, columns=columns, **kw)
        dl = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=lambda b: b,
                        multiprocessing_context="fork")
        rows += sum(len(b) for b in dl)
    wall = time.perf_counter() - started
    totals: dict[str, float] = defaultdict(float)
    for line in _LOG.read_text().splitlines():
        kind, n = line.split()
        totals[kind] += int(n)
    return {"rows": rows, "wall": wall, "fetched": 0.0, "needed": 0.0, **totals}


def main() -> None:
    global _LOG
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=20_000)
    p.add_argument("--shard-rows", type=int, default=10_000)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    server = MotoServer()
    os.environ.update({**ENV, "AWS_ENDPOINT_URL": server.url})
    try:
        fs = fresh_fs()
        fs.mkdir("reweigh-bench")
        with tempfile.TemporaryDirectory(prefix="reweigh-bench-") as tmp:
            root = Path(tmp)
            job = build_manifest(root, args.documents, args.shard_rows)
            for path in sorted(job.rglob("*")):
                if path.is_file():
                    fs.put_file(str(path), f"reweigh-bench/job/{path.relative_to(job).as_posix()}")
            url = "s3://reweigh-bench/job"
            manifest = ManifestDataset(url).manifest
            total = sum(s.bytes for s in manifest.shards)
            _LOG = root / "reads.log"
            _instrument()
            print(f"cpu: {cpu()}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
            print(f"manifest: {len(manifest.shards)} shards, {total / 1e6:.1f} MB, {manifest.totals.rows_out} rows, "
                  f"{manifest.totals.documents_out} documents per epoch; {args.ranks} ranks x {args.workers} "
                  f"workers, batch {args.batch}")
            for cache_name, cache in (("no cache", None), ("cache per node", root / "cache")):
                for columns in (None, ["text"]):
                    fresh = None if cache is None else cache / str(columns)  # a cold cache each time
                    r = epoch(url, args.ranks, args.workers, args.batch, fresh, columns)
                    print(
                        f"{cache_name:>14}, columns={'all' if columns is None else columns}: "
                        f"{r['rows']} rows in {r['wall']:.1f}s; fetched {r['fetched'] / 1e6:.1f} MB "
                        f"({r['fetched'] / total:.2f}x the shards), ranged reads would fetch >= {r['needed'] / 1e6:.1f} MB "
                        f"({r['needed'] / r['fetched']:.0%} of fetched)"
                    )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
