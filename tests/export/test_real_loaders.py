"""Each export read back by its loader library's own classes, in that library's own environment (as a
trainer would have it; tests/export/loader_envs.py builds and caches them): one epoch must hold the
manifest's expanded multiset, and the MDS shards must be the bytes streaming's own MDSWriter writes."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpus.export import ExportConfig, run_export
from corpus.manifest import load_manifest
from tests.corpus.helpers import tree_bytes
from tests.export.conftest import expanded, texts
from tests.export.loader_envs import loader_python
from tests.export.snippets import ENERGON, HF, MDS, MEGATRON, RAY, ids_seen, run_snippet, texts_seen

pytestmark = pytest.mark.slow


def test_streaming_dataset_epoch_is_the_expanded_multiset(job: Path, tmp_path: Path) -> None:
    python = loader_python("mosaicml-streaming")
    run_export(ExportConfig(format="mds", manifest=str(job), out=str(tmp_path / "mds"), mds_shard_bytes=4096))
    assert ids_seen(run_snippet(python, MDS, tmp_path / "mds")) == expanded(job)


_MDS_WRITER = """
import json, os, sys
from streaming import MDSWriter
spec_file, size_limit = sys.argv[1], int(sys.argv[2])
with open(spec_file) as fh:
    streams = json.load(fh)
for stream in streams:
    with MDSWriter(columns=stream["columns"], out=stream["out"], size_limit=size_limit) as writer:
        for row in stream["rows"]:
            writer.write(row)
"""


def test_mds_bytes_equal_streamings_own_writer(job: Path, tmp_path: Path) -> None:
    import subprocess

    python = loader_python("mosaicml-streaming")
    out = tmp_path / "mds"
    run_export(ExportConfig(format="mds", manifest=str(job), out=str(out), mds_shard_bytes=4096))
    rows = [r for s in load_manifest(job).shards for r in pq.read_table(job / s.path).to_pylist()]
    streams = json.loads((out / "streams.json").read_text())["streams"].values()
    spec = []
    for stream in streams:
        shard = json.loads((out / stream["local"] / "index.json").read_text())["shards"][0]
        spec.append(
            {
                "columns": dict(zip(shard["column_names"], shard["column_encodings"], strict=True)),
                "out": str(tmp_path / "reference" / stream["local"]),
                "rows": [r for r in rows if r["repeats"] == stream["repeat"]],  # in manifest order
            }
        )
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run(
        [str(python), "-c", _MDS_WRITER, str(tmp_path / "spec.json"), "4096"], check=True, timeout=600
    )
    for stream in streams:
        assert tree_bytes(tmp_path / "reference" / stream["local"]) == tree_bytes(out / stream["local"])


def test_hf_load_dataset_epoch_is_the_expanded_multiset(job: Path, tmp_path: Path) -> None:
    python = loader_python("datasets")
    run_export(ExportConfig(format="hf", manifest=str(job), out=str(tmp_path / "hf"), hf_shard_rows=16))
    stdout = run_snippet(python, HF, tmp_path / "hf", {"HF_DATASETS_CACHE": str(tmp_path / "cache")})
    assert ids_seen(stdout) == expanded(job)


def test_energon_epoch_is_the_expanded_multiset(job: Path, tmp_path: Path) -> None:
    """Energon indexes the export with its own `prepare_dataset`, then one epoch of the metadataset
    (blend_epochized) yields every document's text exactly `repeats` times."""
    python = loader_python("megatron-energon")
    run_export(ExportConfig(format="energon", manifest=str(job), out=str(tmp_path / "energon"), energon_shard_rows=16))
    by_id = texts(job)
    want: Counter[str] = Counter()
    for doc_id, count in expanded(job).items():
        want[by_id[doc_id]] += count
    assert texts_seen(run_snippet(python, ENERGON, tmp_path / "energon")) == want


def test_ray_data_epoch_is_the_expanded_multiset(job: Path, tmp_path: Path) -> None:
    python = loader_python("ray")
    run_export(ExportConfig(format="hf", manifest=str(job), out=str(tmp_path / "hf"), hf_shard_rows=1000))
    # Ray's sockets live under its temp dir, and AF_UNIX paths stop at 107 bytes: a short one of our own.
    ray_tmp = tempfile.mkdtemp(prefix="rw-ray-", dir="/tmp")
    try:
        env = {"RAY_ADDRESS": "local", "RAY_DISABLE_USAGE_STATS": "1", "RAY_TMPDIR": ray_tmp}
        assert ids_seen(run_snippet(python, RAY, tmp_path / "hf", env)) == expanded(job)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_megatron_indexed_datasets_and_blend(
    job: Path, tmp_path: Path, tokenizer_dir: Path, tiny_tokenizer
) -> None:
    python = loader_python("megatron-core")
    out = tmp_path / "meg"
    record = run_export(
        ExportConfig(format="megatron", manifest=str(job), out=str(out), tokenizer=str(tokenizer_dir))
    )
    want: Counter[tuple[int, ...]] = Counter()
    for doc_id, n in expanded(job).items():
        tokens = tiny_tokenizer(texts(job)[doc_id], add_special_tokens=False)["input_ids"]
        want[(*tokens, tiny_tokenizer.eos_token_id)] += n
    repeats = {g["name"]: g["repeats"] for g in record["groups"]}
    seen: Counter[tuple[int, ...]] = Counter()
    for line in run_snippet(python, MEGATRON, out).strip().splitlines():
        name, docs = line.split(" ", 1)
        for doc in json.loads(docs):
            seen[tuple(doc)] += repeats[name]
    assert seen == want
    # Megatron's own blending helper draws samples in proportion to repeats x tokens.
    seq_len = 16
    weights = [g["weight"] for g in record["groups"]]
    num_samples = sum(weights) // seq_len  # one pass over the epoch's tokens
    code = (
        "import os, sys, json; sys.path.insert(0, os.environ['EXPORT_DIR']); from load_megatron import "
        f"blended_sample_counts; print(json.dumps(blended_sample_counts(os.environ['EXPORT_DIR'], {num_samples})))"
    )
    counts = json.loads(run_snippet(python, code, out).strip().splitlines()[-1])
    for count, weight in zip(counts, weights, strict=True):
        assert abs(count - num_samples * weight / sum(weights)) <= 1
