"""A PyTorch IterableDataset over a rewrite's manifest: repeats expanded, shuffled per (seed, epoch),
split across ranks and DataLoader workers with nothing read twice and nothing lost, resumable.

The epoch's order: shards in a seeded order; within a shard, its rows each repeated `repeats`
times, in a seeded order. That sequence of `documents_out` samples is cut into one contiguous
range per rank (sizes within one of each other), so a rank touches only about 1/world_size of the
shards. Within a rank, workers take turns by blocks of `batch_size` samples: worker w owns blocks
w, w + num_workers, ... That is exactly the order in which a DataLoader with that batch size (and
in-order delivery) hands batches out, so the trainer sees the rank's sequence in order, and
"samples consumed so far" is a complete description of where it stands.

Resume: `state_dict(consumed)` / `load_state_dict(state)`. With num_workers=0 the dataset counts
what it yielded itself; with worker processes it cannot see that, so pass the number of samples the
training loop took (batches x batch_size).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from corpus.manifest import Manifest, http_get, is_url, load_manifest, resolve_shard, shard_base
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
    ) -> None:
        """`manifest`: a path, a job directory, an http(s) URL, or a loaded Manifest (then give `base`,
        where its shard paths resolve). `headers` go with every HTTP request (e.g. Authorization).
        rank/world_size default to torch.distributed's when it is initialised, else 0 and 1."""
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
            "consumed": self._yielded if consumed is None else consumed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict(0)
        for key in ("manifest", "seed", "shuffle", "rank", "world_size"):
            if state.get(key) != mine[key]:
                raise ConfigError(
                    f"state {key}={state.get(key)!r} does not match this dataset's {key}={mine[key]!r}"
                )
        if not (0 <= state["consumed"] <= len(self)):
            raise ConfigError(
                f"state consumed={state['consumed']} is outside this rank's epoch of {len(self)} samples"
            )
        self.epoch, self._offset, self._yielded = state["epoch"], state["consumed"], state["consumed"]

    # ------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lo, hi = self._rank_range()
        start = lo + self._offset  # first global position still to yield
        self._yielded = self._offset
        shard_start = 0
        for shard in self._shard_order().tolist():
            count = int(self._documents[shard])
            a, b = max(start, shard_start), min(hi, shard_start + count)
            if a < b:
                # Positions [a, b) of the epoch: which are this worker's (counted from `start`)?
                positions = np.arange(a, b)
                owned = positions[((positions - start) // self.batch_size) % workers == worker]
                if len(owned):
                    rows, samples = self._load(shard)
                    for position in (owned - shard_start).tolist():
                        self._yielded += 1
                        yield dict(rows[samples[position]])
            shard_start += count
            if shard_start >= hi:
                break

    def _load(self, shard: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The shard's rows, and its epoch-ordered samples (row index per sample, repeats expanded)."""
        entry = self.manifest.shards[shard]
        location = resolve_shard(self.base, entry.path)
        data = http_get(location, self.headers) if is_url(location) else Path(location).read_bytes()
        if self.verify and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise InputError(
                f"shard {location!r} does not match the manifest's sha256 (changed or truncated)"
            )
        wanted = None if self.columns is None else list(dict.fromkeys([*self.columns, "repeats"]))
        table = pq.read_table(io.BytesIO(data), columns=wanted)
        repeats = table.column("repeats").to_numpy()
        if self.columns is not None and "repeats" not in self.columns:
            table = table.drop_columns(["repeats"])
        if int(repeats.sum()) != entry.documents:
            raise InputError(
                f"shard {location!r} holds {int(repeats.sum())} documents, the manifest says {entry.documents}"
            )
        samples = np.repeat(np.arange(len(repeats)), repeats)
        if self.shuffle:
            samples = samples[self._rng(1, shard).permutation(len(samples))]
        return table.to_pylist(), samples
