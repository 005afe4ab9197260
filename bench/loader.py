"""What a pretraining job sees of a manifest: packed-token throughput, memory per worker against
shard size, and export time per format.

    .venv/bin/python bench/loader.py                       # 100,000 documents (a few minutes)
    .venv/bin/python bench/loader.py --documents 20000     # quicker

Builds a manifest with `run_rewrite` on a hash-scored stand-in engine (soft selection, so documents
repeat 0-4 times; no model runs: this measures the data path, not scoring), then prints:
- tokens/s of `ManifestDataset(tokenizer=, seq_len=)` through a DataLoader with 2 workers;
- the peak RSS of one reading process per shard size, streaming row groups, against reading each
  shard whole (what the loader did before);
- the wall time of `reweigh export` for each format.
The tokenizer is the tests' small byte-level BPE (offline); a real 50k-vocabulary one is slower per
token, so the tokens/s here is an upper bound on the loader's own overhead.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as `python bench/loader.py`, this folder would come first on sys.path and bench/scoring.py
# would shadow the scoring package: drop it, and put the repository first.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.config import RewriteConfig, SelectionConfig
from corpus.export import ExportConfig, run_export
from corpus.manifest import load_manifest
from corpus.rewrite import run_rewrite
from scoring.hardware import cpu_description
from tests.corpus.fakes import FakeSpec
from tests.synthetic import build_tokenizer

# A 5,000-word random vocabulary: text that parquet compresses about as well as prose.
_WORDS = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=3 + i % 8)) for i in range(5000)]


def build_manifest(root: Path, documents: int, shard_rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    corpus = root / "corpus.jsonl"
    with corpus.open("w") as fh:
        for i in range(documents):
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 400)))
            fh.write(f'{{"id": "d{i}", "text": "{i} {words}"}}\n')
    out = root / f"job-{shard_rows}"
    selection = SelectionConfig(method="soft", temperature=0.3, max_weight=4.0)
    run_rewrite(
        RewriteConfig(inputs=[str(corpus)], output=str(out), selection=selection, shard_rows=shard_rows),
        FakeSpec(),
    )
    return out


def packed_throughput(job: Path, seq_len: int, seconds: float) -> tuple[int, float]:
    from torch.utils.data import DataLoader

    from corpus.loader import ManifestDataset

    ds = ManifestDataset(job, tokenizer=build_tokenizer(), seq_len=seq_len, batch_size=16)
    loader = DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context="fork")
    tokens, start = 0, time.perf_counter()
    for batch in loader:
        tokens += int(batch["attention_mask"].sum())
        if time.perf_counter() - start > seconds:
            break
    return tokens, time.perf_counter() - start


_RSS_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import pyarrow.parquet as pq
from corpus.loader import ManifestDataset
from corpus.manifest import load_manifest

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

job, mode = sys.argv[2], sys.argv[3]
ds = ManifestDataset(job, columns=["id", "text"])
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to now: imports do not count
base = status("VmRSS")
if mode == "row-groups":
    n = sum(1 for _ in ds)
else:  # the previous loader: each shard's table whole, then its rows
    n = 0
    for s in load_manifest(job).shards:
        n += len(pq.read_table(f"{job}/{s.path}", columns=["id", "text", "repeats"]).to_pylist())
print(n, base, status("VmHWM"))
"""


def peak_rss(job: Path, mode: str) -> int:
    """Peak RSS growth (KiB) of a fresh process while it reads the whole job (imports excluded)."""
    repo = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, repo, str(job), mode], capture_output=True, text=True, check=True
    )
    _, base, peak = map(int, out.stdout.split())
    return peak - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to time the packed loader")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}; python {platform.python_version()}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="reweigh-bench-loader-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        big = build_manifest(root, args.documents, shard_rows=args.documents // 4)
        print(f"built a {args.documents:,}-document manifest in {time.perf_counter() - t:.1f}s")

        tokens, seconds = packed_throughput(big, args.seq_len, args.seconds)
        print(
            f"packed loader, seq_len={args.seq_len}, 2 workers: {tokens:,} tokens in {seconds:.1f}s = {tokens / seconds:,.0f} tokens/s"
        )

        print("peak RSS growth of one process reading the whole job (MiB), row groups vs whole shards:")
        for rows in (args.documents // 16, args.documents // 4, args.documents):
            job = (
                big if rows == args.documents // 4 else build_manifest(root, args.documents, shard_rows=rows)
            )
            shards = load_manifest(job).shards
            shard_mib, shard_rows = max(s.bytes for s in shards) / 2**20, max(s.rows for s in shards)
            streamed, whole = peak_rss(job, "row-groups"), peak_rss(job, "whole")
            print(
                f"  --shard-rows {rows:,} (largest shard {shard_rows:,} rows, {shard_mib:.1f} MiB; row groups of 8,192): "
                f"row groups +{streamed / 1024:.0f}, whole shards +{whole / 1024:.0f}"
            )

        tokenizer_dir = root / "tokenizer"
        build_tokenizer().save_pretrained(tokenizer_dir)
        for fmt in ("mds", "hf", "energon", "megatron"):
            t = time.perf_counter()
            run_export(
                ExportConfig(
                    format=fmt,  # type: ignore[arg-type]
                    manifest=str(big),
                    out=str(root / f"export-{fmt}"),
                    tokenizer=str(tokenizer_dir) if fmt == "megatron" else None,
                    allow_other_tokenizer=fmt == "megatron",
                )
            )
            print(f"export {fmt}: {time.perf_counter() - t:.1f}s for {args.documents:,} documents")
    print(f"bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
