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
from corpus.rewrite import run_rewrite
from scoring.errors import ConfigError, InputError
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


def test_column_subset(job: Path) -> None:
    rows = list(ManifestDataset(job, columns=["id", "score"], shuffle=False))
    assert set(rows[0]) == {"id", "score"}
    assert len(rows) == sum(expected(job).values())
