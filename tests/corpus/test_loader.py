"""ManifestDataset: every document exactly once per epoch across ranks x workers, exact resume, HTTP."""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from corpus.config import RewriteConfig, SelectionConfig
from corpus.loader import ManifestDataset
from corpus.manifest import load_manifest
from corpus.packing import Packing
from corpus.rewrite import run_rewrite
from scoring.errors import ConfigError, InputError, NotFoundError
from tests.corpus.fakes import FakeSpec
from tests.corpus.helpers import make_rows, write_jsonl


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("loader")
    path = write_jsonl(d / "in.jsonl", make_rows(150))
    sel = SelectionConfig(method="soft", temperature=0.5, max_weight=3.0, target_documents=200)
    run_rewrite(
        RewriteConfig(inputs=[str(path)], output=str(d / "out"), selection=sel, shard_rows=9), FakeSpec()
    )
    return d / "out"


def expected(job: Path) -> Counter[str]:
    m = load_manifest(job)
    counts: Counter[str] = Counter()
    for s in m.shards:
        for row in pq.read_table(job / s.path, columns=["id", "repeats"]).to_pylist():
            counts[row["id"]] += row["repeats"]
    return counts


def loader(ds: ManifestDataset, workers: int) -> DataLoader:
    kw = {"multiprocessing_context": "fork"} if workers else {}
    return DataLoader(ds, batch_size=ds.batch_size, num_workers=workers, collate_fn=lambda b: b, **kw)


def ids(dl: DataLoader) -> list[str]:
    return [row["id"] for batch in dl for row in batch]


def test_two_ranks_two_workers_see_each_document_exactly_once(job: Path) -> None:
    want = expected(job)
    assert sum(want.values()) == 200 and max(want.values()) > 1
    seen: Counter[str] = Counter()
    sizes = []
    for rank in range(2):
        ds = ManifestDataset(job, rank=rank, world_size=2, seed=5, batch_size=3)
        got = ids(loader(ds, workers=2))
        sizes.append(len(got))
        assert len(got) == len(ds)
        # Workers take turns in batch-size blocks: the loader delivers the rank's sequence in order.
        assert got == ids(
            loader(ManifestDataset(job, rank=rank, world_size=2, seed=5, batch_size=3), workers=0)
        )
        seen.update(got)
    assert seen == want
    assert abs(sizes[0] - sizes[1]) <= 1


@pytest.mark.parametrize(("world_size", "workers", "batch"), [(3, 2, 4), (1, 2, 1), (4, 0, 2)])
def test_other_splits_lose_and_duplicate_nothing(
    job: Path, world_size: int, workers: int, batch: int
) -> None:
    seen: Counter[str] = Counter()
    for rank in range(world_size):
        seen.update(
            ids(loader(ManifestDataset(job, rank=rank, world_size=world_size, batch_size=batch), workers))
        )
    assert seen == expected(job)


def test_shuffle_is_seeded_per_epoch(job: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        ds = ManifestDataset(job, seed=seed)
        ds.set_epoch(epoch)
        return [r["id"] for r in ds]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and Counter(order(1, 0)) == Counter(order(1, 1))
    assert order(1, 0) != order(2, 0)
    plain = [r["id"] for r in ManifestDataset(job, shuffle=False)]
    assert plain == [i for i, n in expected(job).items() for _ in range(n)]


def test_resume_mid_epoch_in_process(job: Path) -> None:
    ds = ManifestDataset(job, rank=1, world_size=2, seed=3)
    ds.set_epoch(2)
    full = [r["id"] for r in ds]
    it = iter(ds)
    head = [next(it)["id"] for _ in range(37)]
    state = ds.state_dict()
    assert state["consumed"] == 37 and state["epoch"] == 2
    fresh = ManifestDataset(job, rank=1, world_size=2, seed=3)
    fresh.load_state_dict(state)
    assert head + [r["id"] for r in fresh] == full


def test_resume_mid_epoch_with_workers(job: Path) -> None:
    ds = ManifestDataset(job, rank=0, world_size=2, seed=3, batch_size=4)
    full = ids(loader(ds, workers=2))
    batches = iter(loader(ds, workers=2))
    head = [row["id"] for _ in range(5) for row in next(batches)]
    state = ds.state_dict(consumed=len(head))  # what the training loop took
    fresh = ManifestDataset(job, rank=0, world_size=2, seed=3, batch_size=4)
    fresh.load_state_dict(state)
    assert head + ids(loader(fresh, workers=2)) == full


def test_state_from_another_setup_is_refused(job: Path) -> None:
    state = ManifestDataset(job, seed=1).state_dict()
    with pytest.raises(ConfigError, match="seed"):
        ManifestDataset(job, seed=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="rank=2"):
        ManifestDataset(job, rank=2, world_size=2)


def test_changed_shard_is_detected(job: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(job, copy)
    first = load_manifest(copy).shards[0].path
    shards = copy / first
    data = pq.read_table(shards)
    pq.write_table(data.slice(1), shards)
    with pytest.raises(InputError, match="sha256"):
        list(ManifestDataset(copy, shuffle=False))


class _Handler(http.server.SimpleHTTPRequestHandler):
    token = "Bearer s3cret"

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.token:
            self.send_error(401)
            return
        # The service's layout: /v1/manifests/{id} and /v1/manifests/{id}/shards/{name}.
        prefix = "/v1/manifests/job1"
        if self.path == prefix:
            self.path = "/manifest.json"
        elif self.path.startswith(prefix + "/"):
            self.path = self.path[len(prefix) :]
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(job: Path) -> Iterator[str]:
    handler = lambda *a, **kw: _Handler(*a, directory=str(job), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("path", ["/manifest.json", "/v1/manifests/job1"])
def test_reads_over_http_with_a_bearer_token(job: Path, server: str, path: str) -> None:
    headers = {"Authorization": "Bearer s3cret"}
    remote = ManifestDataset(server + path, headers=headers, seed=4)
    assert [r["id"] for r in remote] == [r["id"] for r in ManifestDataset(job, seed=4)]
    with pytest.raises(InputError, match="401"):
        ManifestDataset(server + path, headers={"Authorization": "Bearer wrong"})


def test_a_refused_download_names_the_url_and_leaves_no_part_file(server: str, tmp_path: Path) -> None:
    from corpus.shard_fetch import _download

    headers = {"Authorization": "Bearer s3cret"}
    shard = f"{server}/v1/manifests/job1/shards/no-such-shard.parquet"
    with pytest.raises(NotFoundError, match=r"no-such-shard\.parquet.*HTTP 404"):
        _download(shard, headers, str(tmp_path))
    with pytest.raises(InputError, match="HTTP 401"):
        _download(shard, {"Authorization": "Bearer wrong"}, str(tmp_path))
    with pytest.raises(InputError, match=r"cannot fetch 'http://127\.0\.0\.1:9/"):
        _download("http://127.0.0.1:9/shard.parquet", headers, str(tmp_path))  # nothing listens there
    assert list(tmp_path.iterdir()) == []


def test_column_subset(job: Path) -> None:
    rows = list(ManifestDataset(job, columns=["id", "score"], shuffle=False))
    assert set(rows[0]) == {"id", "score"}
    assert len(rows) == sum(expected(job).values())


# ---------------------------------------------------------------------------- row groups, packing


@pytest.fixture(scope="module")
def small_groups(job: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The job with its shards rewritten in row groups of 2 rows (and the manifest updated to match)."""
    import shutil

    from corpus.fsutil import sha256_file
    from corpus.manifest import write_manifest

    copy = tmp_path_factory.mktemp("groups") / "job"
    shutil.copytree(job, copy)
    m = load_manifest(copy)
    shards = []
    for s in m.shards:
        pq.write_table(pq.read_table(copy / s.path), copy / s.path, row_group_size=2)
        shards.append(
            s.model_copy(
                update={"sha256": sha256_file(copy / s.path), "bytes": (copy / s.path).stat().st_size}
            )
        )
    write_manifest(copy, m.model_copy(update={"shards": shards}))
    return copy


def test_reads_row_groups_not_whole_shards(small_groups: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int | None] = []
    original = pq.ParquetFile.read_row_group

    def spy(self: pq.ParquetFile, i: int, columns: list[str] | None = None, **kw: object) -> object:
        if columns != ["repeats"]:
            reads.append(self.metadata.row_group(i).num_rows)
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("a whole shard was read"))
    seen: Counter[str] = Counter()
    for rank in range(2):
        seen.update(
            ids(loader(ManifestDataset(small_groups, rank=rank, world_size=2, seed=1, batch_size=2), 0))
        )
    assert seen == expected(small_groups)
    assert reads and max(reads) == 2


def test_row_group_order_is_seeded_and_resumable(small_groups: Path) -> None:
    ds = ManifestDataset(small_groups, seed=7)
    full = [r["id"] for r in ds]
    assert full != [r["id"] for r in ManifestDataset(small_groups, seed=8)]
    it = iter(ds)
    head = [next(it)["id"] for _ in range(23)]
    fresh = ManifestDataset(small_groups, seed=7)
    fresh.load_state_dict(ds.state_dict())
    assert head + [r["id"] for r in fresh] == full


def _tokens_expected(job: Path, tokenizer) -> Counter[int]:
    want: Counter[int] = Counter()
    for s in load_manifest(job).shards:
        for row in pq.read_table(job / s.path, columns=["text", "repeats"]).to_pylist():
            ids_ = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for t in ids_:
                want[t] += row["repeats"]
    return want


def _blocks(dl: DataLoader) -> list[list[int]]:
    out = []
    for batch in dl:
        for block, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True):
            out.append([t for t, m in zip(block, mask, strict=True) if m])
    return out


def _packed_loader(ds: ManifestDataset, workers: int) -> DataLoader:
    kw = {"multiprocessing_context": "fork"} if workers else {}
    return DataLoader(ds, batch_size=ds.batch_size, num_workers=workers, **kw)


def test_packed_blocks_hold_every_token_once_across_ranks_and_workers(
    small_groups: Path, tiny_tokenizer
) -> None:
    seen: Counter[int] = Counter()
    for rank in range(2):
        ds = ManifestDataset(
            small_groups, rank=rank, world_size=2, seed=2, batch_size=3, tokenizer=tiny_tokenizer, seq_len=16
        )
        blocks = _blocks(_packed_loader(ds, workers=2))
        # Full blocks everywhere but each worker's last one (padded, its padding masked out).
        assert sum(len(b) < 16 for b in blocks) <= 2
        for b in blocks:
            seen.update(b)
    assert seen == _tokens_expected(small_groups, tiny_tokenizer)


def test_packed_blocks_resume_exactly(small_groups: Path, tiny_tokenizer) -> None:
    def make() -> ManifestDataset:
        return ManifestDataset(small_groups, seed=3, batch_size=2, tokenizer=tiny_tokenizer, seq_len=8)

    full = _blocks(_packed_loader(make(), workers=2))
    batches = iter(_packed_loader(make(), workers=2))
    head = []
    for _ in range(5):
        batch = next(batches)
        head += [
            [t for t, m in zip(b, k, strict=True) if m]
            for b, k in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True)
        ]
    state = make().state_dict(consumed=len(head))
    fresh = make()
    fresh.load_state_dict(state)
    assert head + _blocks(_packed_loader(fresh, workers=2)) == full
    # In process, the dataset counts the blocks itself.
    ds = make()
    it = iter(ds)
    first = [next(it)["input_ids"].tolist() for _ in range(7)]
    again = make()
    again.load_state_dict(ds.state_dict())
    assert first + [b["input_ids"].tolist() for b in again] == [b["input_ids"].tolist() for b in make()]


def test_packing_settings_are_checked(job: Path, tiny_tokenizer) -> None:
    with pytest.raises(ConfigError, match="give both or neither"):
        ManifestDataset(job, seq_len=8)
    with pytest.raises(ConfigError, match="seq_len=0"):
        ManifestDataset(job, tokenizer=tiny_tokenizer, seq_len=0)
    state = ManifestDataset(job, tokenizer=tiny_tokenizer, seq_len=8).state_dict()
    with pytest.raises(ConfigError, match="seq_len"):
        ManifestDataset(job, tokenizer=tiny_tokenizer, seq_len=16).load_state_dict(state)
    with pytest.raises(ConfigError, match="whole number of batches"):
        Packing.blocks_before(3, worker=0, workers=2, batch_size=4)
    # 5 batches of 2 taken in turn from 2 workers: worker 0 gave batches 0, 2, 4; worker 1 gave 1, 3.
    assert [Packing.blocks_before(10, w, 2, 2) for w in (0, 1)] == [6, 4]
