"""Exports in reweigh's own environment: layout, exact multisets, determinism, named errors.
(tests/export/test_real_loaders.py reads the same exports with each loader library's own classes.)"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from corpus.export import ExportConfig, run_export
from corpus.manifest import load_manifest, write_manifest
from scoring.errors import ConfigError, InputError
from service.cli import main
from tests.corpus.helpers import tree_bytes
from tests.export.conftest import expanded, texts
from tests.export.snippets import HF, ids_seen, run_snippet


def export(job: Path, out: Path, fmt: str, **kw: object) -> dict:
    return run_export(ExportConfig(format=fmt, manifest=str(job), out=str(out), **kw))  # type: ignore[arg-type]


def read_mds_stream(directory: Path) -> list[dict]:
    """MDS read back by its documented layout (the real StreamingDataset does it in the slow tests)."""
    index = json.loads((directory / "index.json").read_text())
    assert index["version"] == 2
    rows = []
    for shard in index["shards"]:
        data = (directory / shard["raw_data"]["basename"]).read_bytes()
        count = int(np.frombuffer(data[:4], np.uint32)[0])
        assert count == shard["samples"] and len(data) == shard["raw_data"]["bytes"]
        offsets = np.frombuffer(data[4 : 8 + 4 * count], np.uint32)
        for begin, end in itertools.pairwise(offsets):
            sample, sizes, at = data[begin:end], [], 0
            for size in shard["column_sizes"]:
                if size is None:
                    size = int(np.frombuffer(sample[at : at + 4], np.uint32)[0])
                    at += 4
                sizes.append(size)
            row = {}
            for name, encoding, size in zip(
                shard["column_names"], shard["column_encodings"], sizes, strict=True
            ):
                raw, at = sample[at : at + size], at + size
                row[name] = {
                    "str": lambda b: b.decode(),
                    "int64": lambda b: int(np.frombuffer(b, np.int64)[0]),
                    "float64": lambda b: float(np.frombuffer(b, np.float64)[0]),
                    "json": json.loads,
                }[encoding](raw)
            rows.append(row)
    return rows


def test_mds_streams_reproduce_the_epoch(job: Path, tmp_path: Path) -> None:
    want = expanded(job)
    assert len(set(want.values())) >= 3  # several repeat counts, so several streams
    record = export(job, tmp_path / "mds", "mds", mds_shard_bytes=4096)
    out = tmp_path / "mds"
    streams = json.loads((out / "streams.json").read_text())["streams"]
    assert {s["repeat"] for s in streams.values()} == set(want.values())
    seen: Counter[str] = Counter()
    for name, stream in streams.items():
        rows = read_mds_stream(out / stream["local"])
        assert {r["repeats"] for r in rows} == {stream["repeat"]}
        for r in rows:
            seen[r["id"]] += stream["repeat"]
        assert len(json.loads((out / stream["local"] / "index.json").read_text())["shards"]) >= 1, name
    assert seen == want
    assert sum(g["documents"] for g in record["groups"]) == load_manifest(job).totals.documents_out
    # Every column survives, nested and null values included.
    rows = {r["id"]: r for s in streams.values() for r in read_mds_stream(out / s["local"])}
    for doc_id, row in rows.items():
        n = int(doc_id.split("-")[1])
        assert row["meta"] == (None if n % 10 == 7 else {"source": "doc", "n": n})
        assert row["text"] == texts(job)[doc_id]
    assert (out / "streams.yaml").read_text().startswith("streams:")


def test_mds_shards_respect_the_size_limit(job: Path, tmp_path: Path) -> None:
    export(job, tmp_path / "mds", "mds", mds_shard_bytes=2048)
    for index in (tmp_path / "mds").glob("*/index.json"):
        for shard in json.loads(index.read_text())["shards"]:
            assert shard["raw_data"]["bytes"] <= 2048 or shard["samples"] == 1


def test_energon_datasets_repeat_to_the_epoch(job: Path, tmp_path: Path) -> None:
    """Read back by the WebDataset layout (the real Energon does it in the slow tests): dataset
    `repeat_r`, taken `repetitions: r` times by the metadataset, each row once, text and row."""
    import tarfile

    import yaml

    record = export(job, tmp_path / "energon", "energon", energon_shard_rows=16)
    meta = yaml.safe_load((tmp_path / "energon" / "metadataset.yaml").read_text())
    assert meta["__class__"] == "MetadatasetV2"
    blend = meta["splits"]["train"]["blend_epochized"]
    assert [(b["path"], b["repetitions"]) for b in blend] == [(f"./{g['name']}", g["repeats"]) for g in record["groups"]]
    seen: Counter[str] = Counter()
    by_id = texts(job)
    for entry in blend:
        directory = tmp_path / "energon" / entry["path"]
        dataset = yaml.safe_load((directory / ".nv-meta" / "dataset.yaml").read_text())
        assert dataset["field_map"] == {"text": "txt"}
        shards = sorted(directory.glob("*.tar"))
        for shard in shards:
            with tarfile.open(shard) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
            assert len(members) <= 2 * 16
            for name, data in members.items():
                if name.endswith(".json"):
                    row = json.loads(data)
                    assert members[name.removesuffix(".json") + ".txt"].decode() == by_id[row["id"]]
                    assert row["repeats"] == entry["repetitions"]
                    seen[row["id"]] += entry["repetitions"]
    assert seen == expanded(job)
    assert sum(g["shards"] for g in record["groups"]) == len(list((tmp_path / "energon").rglob("*.tar")))


@pytest.mark.parametrize("fmt", ["mds", "hf", "energon"])
def test_export_is_deterministic(job: Path, tmp_path: Path, fmt: str) -> None:
    export(job, tmp_path / "a" / "x", fmt)
    export(job, tmp_path / "b" / "x", fmt)
    assert tree_bytes(tmp_path / "a" / "x") == tree_bytes(tmp_path / "b" / "x")


def test_hf_epoch_is_the_expanded_multiset(job: Path, tmp_path: Path) -> None:
    record = export(job, tmp_path / "hf", "hf", hf_shard_rows=16)
    assert abs(sum(record["interleave_probabilities"]) - 1) < 1e-12
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "repeat_1" in card
    # The README's snippet, run as a trainer would (datasets is also one of reweigh's dependencies).
    seen = ids_seen(
        run_snippet(sys.executable, HF, tmp_path / "hf", {"HF_DATASETS_CACHE": str(tmp_path / "c")})
    )
    assert seen == expanded(job)


def read_indexed(prefix: Path) -> list[list[int]]:
    """Megatron's .idx/.bin by the documented layout (the real IndexedDataset reads it in the slow tests)."""
    idx = prefix.with_suffix(".idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00" and int.from_bytes(idx[9:17], "little") == 1
    dtype = {8: np.uint16, 4: np.int32}[idx[17]]
    sequences = int.from_bytes(idx[18:26], "little")
    documents = int.from_bytes(idx[26:34], "little")
    lengths = np.frombuffer(idx, np.int32, sequences, 34)
    pointers = np.frombuffer(idx, np.int64, sequences, 34 + 4 * sequences)
    doc_index = np.frombuffer(idx, np.int64, documents, 34 + 12 * sequences)
    assert doc_index.tolist() == list(range(sequences + 1))
    assert len(idx) == 34 + 12 * sequences + 8 * documents
    tokens = np.fromfile(prefix.with_suffix(".bin"), dtype)
    return [
        tokens[p // tokens.itemsize : p // tokens.itemsize + n].tolist()
        for p, n in zip(pointers, lengths, strict=True)
    ]


def test_megatron_prefixes_and_token_weights(
    job: Path, tmp_path: Path, tokenizer_dir: Path, tiny_tokenizer
) -> None:
    record = export(job, tmp_path / "meg", "megatron", tokenizer=str(tokenizer_dir))
    out = tmp_path / "meg"
    eos = tiny_tokenizer.eos_token_id
    want: Counter[tuple[int, ...]] = Counter()
    for doc_id, n in expanded(job).items():
        ids = tiny_tokenizer(texts(job)[doc_id], add_special_tokens=False)["input_ids"]
        want[(*ids, eos)] += n
    seen: Counter[tuple[int, ...]] = Counter()
    blend = json.loads((out / "blend.json").read_text())
    for group, prefix, weight in zip(record["groups"], blend["prefixes"], blend["weights"], strict=True):
        docs = read_indexed(out / prefix)
        tokens = sum(map(len, docs))
        # Megatron weighs samples, i.e. tokens: weight = repeats x tokens (EOS included).
        assert weight == group["repeats"] * tokens == group["repeats"] * group["tokens"]
        for doc in docs:
            seen[tuple(doc)] += group["repeats"]
    assert seen == want
    line = (out / "data_path.txt").read_text().split()
    assert line[0] == "--data-path" and [int(w) for w in line[1::2]] == blend["weights"]
    assert line[2::2] == [str(out.resolve() / p) for p in blend["prefixes"]]


def test_megatron_refuses_a_tokenizer_other_than_the_scoring_one(
    job: Path, tmp_path: Path, tokenizer_dir: Path
) -> None:
    import shutil

    copy = tmp_path / "job"
    shutil.copytree(job, copy)
    m = load_manifest(copy)
    fp = {**m.fingerprint, "engine": {**m.fingerprint["engine"], "tokenizer_sha256": "ab" * 32}}
    write_manifest(copy, m.model_copy(update={"fingerprint": fp}))
    with pytest.raises(ConfigError, match="not the one the manifest was scored with"):
        export(copy, tmp_path / "meg", "megatron", tokenizer=str(tokenizer_dir))
    assert not (tmp_path / "meg").exists()
    export(copy, tmp_path / "meg", "megatron", tokenizer=str(tokenizer_dir), allow_other_tokenizer=True)
    with pytest.raises(ConfigError, match="give tokenizer="):
        export(copy, tmp_path / "meg2", "megatron")


def test_bad_requests_are_named(job: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="exists"):
        export(job, tmp_path / "taken", "mds")
    # Checked when the config is built (pydantic wraps the ConfigError in its ValidationError).
    with pytest.raises(ValueError, match="only used by format='megatron'"):
        export(job, tmp_path / "x", "hf", tokenizer="t")
    with pytest.raises(ValueError, match="not an http"):
        export(Path("http://h/v1/manifests/j"), tmp_path / "x", "hf")  # type: ignore[arg-type]


def test_a_changed_shard_fails_the_export_and_leaves_nothing(job: Path, tmp_path: Path) -> None:
    import shutil

    import pyarrow.parquet as pq

    copy = tmp_path / "job"
    shutil.copytree(job, copy)
    shard = copy / load_manifest(copy).shards[1].path
    pq.write_table(pq.read_table(shard).slice(1), shard)
    with pytest.raises(InputError, match="sha256"):
        export(copy, tmp_path / "mds", "mds")
    assert not (tmp_path / "mds").exists() and [p.name for p in tmp_path.iterdir()] == ["job"]


def test_unsupported_library_version_is_a_clear_error(job: Path, tmp_path: Path) -> None:
    export(job, tmp_path / "mds", "mds")
    # What importlib.metadata reads for an installed distribution: a dist-info with a version.
    site = tmp_path / "site"
    (site / "mosaicml_streaming-0.7.0.dist-info").mkdir(parents=True)
    (site / "mosaicml_streaming-0.7.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mosaicml-streaming\nVersion: 0.7.0\n"
    )
    code = "import sys; sys.path[:0] = sys.argv[1:]; import load_mds; load_mds.streaming_dataset(sys.argv[2])"
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code, str(site), str(tmp_path / "mds")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "UnsupportedVersionError: mosaicml-streaming 0.7.0 is installed; this export was verified with "
        "mosaicml-streaming>=0.13,<0.14" in result.stderr
    )


def test_cli_export(job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["export", "--format", "hf", str(job), "--out", str(tmp_path / "hf"), "--hf-shard-rows", "50"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["export"] == "hf" and printed["loader"] == "load_hf.py"
    assert json.loads((tmp_path / "hf" / "export.json").read_text())["manifest"]["digest"]
    assert main(["export", "--format", "hf", str(job), "--out", str(tmp_path / "hf")]) == 2


def test_readme_shows_each_loader_snippet_as_the_tests_run_it() -> None:
    import re

    from tests.export import snippets

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    bodies = {"\n".join(line for line in b.splitlines() if not line.startswith("# ")).strip() for b in blocks}
    for name in ("MDS", "HF", "RAY", "MEGATRON", "ENERGON"):
        assert getattr(snippets, name).strip() in bodies, name
