"""A PyTorch IterableDataset over a rewrite's manifest: repeats expanded, shuffled per (seed, epoch),
split across ranks and DataLoader workers with nothing read twice and nothing lost, resumable.

The epoch's order: shards in a seeded order; within a shard, its parquet row groups in a seeded
order; within a row group, its rows each repeated `repeats` times, in a seeded order. A worker reads
one row group at a time (memory is bounded by a row group, not a shard; corpus/shard_fetch.py
checks each shard's sha256 in chunks and downloads the next remote shard while this one is read). That sequence of `documents_out` samples is cut into one contiguous
range per rank (sizes within one of each other), so a rank touches only about 1/world_size of the
shards. Within a rank, workers take turns by blocks of `batch_size` samples: worker w owns blocks
w, w + num_workers, ... That is exactly the order in which a DataLoader with that batch size (and
in-order delivery) hands batches out, so the trainer sees the rank's sequence in order, and
"samples consumed so far" is a complete description of where it stands.

Packing (`tokenizer=`, `seq_len=`): each worker packs the documents it owns into blocks
(corpus/packing.py), and `consumed` counts blocks. Resume with worker processes is exact while every
worker is still yielding (the loader then takes batches from them strictly in turn).

Resume: `state_dict(consumed)` / `load_state_dict(state)`. With num_workers=0 the dataset counts
what it yielded itself; with worker processes it cannot see that, so pass the number of samples the
training loop took (batches x batch_size).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from corpus.manifest import Manifest, load_manifest, shard_base
from corpus.packing import Packing
from corpus.shard_fetch import OpenShard, Prefetcher, ShardCache, open_shard
from scoring.errors import ConfigError, InputError


class ManifestDataset(IterableDataset[dict[str, Any]]):
    def __init__(
        self,
        manifest: str | Path | Manifest,
        *,
        base: str | None = None,
        headers: dict[str, str] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        batch_size: int = 1,
        columns: list[str] | None = None,
        verify: bool = True,
        tokenizer: Any = None,
        seq_len: int | None = None,
        cache_dir: str | Path | None = None,
        cache_limit_bytes: int | None = None,
    ) -> None:
        """`manifest`: a path, a job directory, an http(s) URL, an object-store URL (s3://bucket/job,
        gs://, hf://), or a loaded Manifest (then give `base`, where its shard paths resolve).
        `headers` go with every HTTP request (e.g. Authorization). Remote shards are downloaded (the
        next one while the current one is read); with `cache_dir` and `cache_limit_bytes` they stay
        there between epochs, least recently used evicted past the limit (corpus/shard_fetch.py).
        rank/world_size default to torch.distributed's when it is initialised, else 0 and 1.
        With `tokenizer` (a transformers tokenizer) and `seq_len`, it yields packed blocks
        {"input_ids", "attention_mask"} of `seq_len` tokens instead of documents (corpus/packing.py);
        `batch_size` is then in blocks."""
        if isinstance(manifest, Manifest):
            if base is None:
                raise ConfigError(
                    "a Manifest object needs base= (the directory or URL its shard paths are relative to)"
                )
            self.manifest, self.base = manifest, base
        else:
            self.manifest = load_manifest(manifest, headers)
            self.base = base or shard_base(manifest)
        if rank is None or world_size is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
            world_size = (
                world_size if world_size is not None else (torch.distributed.get_world_size() if dist else 1)
            )
        if world_size < 1 or not (0 <= rank < world_size):
            raise ConfigError(f"rank={rank} must be in [0, world_size={world_size})")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        self.headers, self.seed, self.shuffle = headers, seed, shuffle
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.columns, self.verify = columns, verify
        if (cache_dir is None) != (cache_limit_bytes is None):
            raise ConfigError(
                f"cache_dir={cache_dir!r} and cache_limit_bytes={cache_limit_bytes}: give both or neither"
            )
        self.cache = None
        if cache_dir is not None and cache_limit_bytes is not None:
            self.cache = ShardCache(Path(cache_dir), cache_limit_bytes)
            self.cache.prepare(self.manifest.shards)
        if (tokenizer is None) != (seq_len is None):
            raise ConfigError(
                f"tokenizer={type(tokenizer).__name__} and seq_len={seq_len}: give both or neither"
            )
        if tokenizer is not None and columns is not None:
            raise ConfigError(f"columns={columns} has no use with packing (blocks hold token ids only)")
        text_field = self.manifest.fingerprint.get("text_field", "text")
        self.packing = (
            None if tokenizer is None or seq_len is None else Packing(tokenizer, seq_len, text_field)
        )
        wanted = [text_field] if self.packing is not None else columns
        # Read with each row group: the wanted columns and `repeats` (dropped again if not wanted).
        self._read_columns = None if wanted is None else list(dict.fromkeys([*wanted, "repeats"]))
        self._drop_repeats = wanted is not None and "repeats" not in wanted
        self.epoch = 0
        self._offset = 0  # samples of this rank's epoch already consumed (a resume point)
        self._yielded = 0  # counted in-process (exact with num_workers=0)
        self._documents = np.array([s.documents for s in self.manifest.shards], dtype=np.int64)

    # ----------------------------------------------------------------------------------- epochs

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (clears a resume point)."""
        self.epoch, self._offset, self._yielded = epoch, 0, 0

    def _rank_range(self) -> tuple[int, int]:
        total = int(self._documents.sum())
        return total * self.rank // self.world_size, total * (self.rank + 1) // self.world_size

    def __len__(self) -> int:
        """Documents of this rank's epoch (with packing, blocks are not known before tokenizing)."""
        if self.packing is not None:
            raise TypeError(
                "a packed ManifestDataset has no length before it is read (blocks depend on tokens)"
            )
        lo, hi = self._rank_range()
        return hi - lo

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64([self.seed, self.epoch, *key]))

    def _shard_order(self) -> np.ndarray:
        n = len(self.manifest.shards)
        return self._rng(0).permutation(n) if self.shuffle else np.arange(n)

    # ---------------------------------------------------------------------------------- resume

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        return {
            "manifest": self.manifest.fingerprint.get("digest"),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "seq_len": None if self.packing is None else self.packing.seq_len,
            "consumed": self._yielded if consumed is None else consumed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict(0)
        for key in ("manifest", "seed", "shuffle", "rank", "world_size", "seq_len"):
            if state.get(key) != mine[key]:
                raise ConfigError(
                    f"state {key}={state.get(key)!r} does not match this dataset's {key}={mine[key]!r}"
                )
        limit = len(self) if self.packing is None else None
        if state["consumed"] < 0 or (limit is not None and state["consumed"] > limit):
            raise ConfigError(
                f"state consumed={state['consumed']} is outside this rank's epoch of {limit} samples"
            )
        self.epoch, self._offset, self._yielded = state["epoch"], state["consumed"], state["consumed"]

    # ------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.packing is None:
            start = self._rank_range()[0] + self._offset  # first global position still to yield
            self._yielded = self._offset
            for row in self._documents_of(worker, workers, start):
                self._yielded += 1
                yield row
            return
        # Packed blocks: each worker packs the documents it owns from the epoch's start. A resumed
        # DataLoader starts its turns at worker 0 again, so after B batches its worker w plays the
        # part of worker (w + B) % workers, and skips the blocks that one had handed out.
        batches = self._offset // self.batch_size if workers > 1 else 0
        logical = (worker + batches) % workers
        skip = self.packing.blocks_before(self._offset, logical, workers, self.batch_size)
        self._yielded = self._offset
        rows = self._documents_of(logical, workers, self._rank_range()[0])
        for i, block in enumerate(self.packing.blocks(rows)):
            if i >= skip:
                self._yielded += 1
                yield block

    def _documents_of(self, worker: int, workers: int, start: int) -> Iterator[dict[str, Any]]:
        """This worker's documents of the rank's epoch from global position `start` on, in order,
        read one row group at a time (the next remote shard downloading meanwhile)."""
        _, hi = self._rank_range()
        plan: list[tuple[int, int, np.ndarray]] = []  # (shard, its first position, owned positions)
        shard_start = 0
        for shard in self._shard_order().tolist():
            count = int(self._documents[shard])
            a, b = max(start, shard_start), min(hi, shard_start + count)
            if a < b:
                # Positions [a, b) of the epoch: which are this worker's (counted from `start`)?
                positions = np.arange(a, b)
                owned = positions[((positions - start) // self.batch_size) % workers == worker]
                if len(owned):
                    plan.append((shard, shard_start, owned - shard_start))
            shard_start += count
            if shard_start >= hi:
                break
        prefetch = Prefetcher(self._open, [shard for shard, _, _ in plan])
        try:
            for (shard, _, owned), (_, opened) in zip(plan, prefetch, strict=True):
                try:
                    yield from self._shard_rows(shard, opened, owned)
                finally:
                    opened.close()
        finally:
            prefetch.close()

    def _open(self, shard: int) -> OpenShard:
        return open_shard(
            self.base, self.manifest.shards[shard], headers=self.headers, verify=self.verify, cache=self.cache
        )

    def _shard_rows(self, shard: int, opened: OpenShard, owned: np.ndarray) -> Iterator[dict[str, Any]]:
        """The rows at shard-relative epoch positions `owned` (sorted): the shard's row groups in a
        seeded order, each group's samples (rows x repeats) in a seeded order; only the row groups
        holding an owned position are read, each whole and alone."""
        parquet = opened.file
        repeats_per_group = [
            parquet.read_row_group(g, columns=["repeats"]).column("repeats").to_numpy()
            for g in range(parquet.num_row_groups)
        ]
        documents = sum(int(r.sum()) for r in repeats_per_group)
        entry = self.manifest.shards[shard]
        if documents != entry.documents:
            raise InputError(
                f"shard {opened.location!r} holds {documents} documents, the manifest says {entry.documents}"
            )
        order = (
            self._rng(1, shard).permutation(len(repeats_per_group))
            if self.shuffle
            else range(len(repeats_per_group))
        )
        group_start = 0
        for g in order:
            repeats = repeats_per_group[int(g)]
            count = int(repeats.sum())
            lo, hi = np.searchsorted(owned, [group_start, group_start + count])
            if lo < hi:
                samples = np.repeat(np.arange(len(repeats)), repeats)
                if self.shuffle:
                    samples = samples[self._rng(2, shard, int(g)).permutation(len(samples))]
                table = parquet.read_row_group(int(g), columns=self._read_columns)
                if self._drop_repeats:
                    table = table.drop_columns(["repeats"])
                rows = table.to_pylist()
                for position in (owned[lo:hi] - group_start).tolist():
                    yield dict(rows[samples[position]])
            group_start += count
