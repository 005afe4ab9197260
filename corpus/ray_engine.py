"""The bulk rewrite on a Ray cluster: `reweigh rewrite --engine ray`, and `run_rewrite_on_ray` for the service.

Only scoring is distributed; everything else is the local job's own code (corpus/rewrite.py):

1. The driver loads nothing. One Ray task with an actor's resources loads the pair once to learn the
   fingerprint as the actors will compute it (device and dtype resolve on the node), and the job
   directory is claimed with it exactly as a local run claims it.
2. `run_rewrite(..., prescore=...)` then calls back into this module: input shards are read with
   `ray.data.read_datasource` (corpus/ray_stages.py: one read task per shard, one block per chunk of
   `chunk_docs` documents) and scored by `map_batches` on a fixed pool of actors, each holding one
   teacher/reference pair. The driver writes each returned chunk to the very file the local job
   would (`scores/<shard>/chunk-NNNNN.parquet`, atomic), and a shard's `_DONE.json` once all its
   chunks are on disk.
3. The local step 1 finds every shard done and reads its markers; selection, output shards, report
   and manifest are then the local job's, byte for byte. Nothing names the engine, so a job may be
   started on one engine and resumed on the other.

Fault tolerance, from Ray's own retries (set here, not left to defaults):
- an actor that dies (preempted node, segfault, CUDA error) is restarted up to `max_restarts` times
  and the chunks it held are retried on it or on another actor, up to `max_task_retries` times each:
  finite, so a chunk that kills every actor it meets fails the job instead of looping;
- Python exceptions in scoring are not retried (they would fail the same way again) and no block may
  error silently (`max_errored_blocks=0`): the job fails and says why;
- read tasks keep Ray Data's retries on worker death (a read is idempotent); a file that cannot be
  read is reported per shard and handled by the local step (--on-error fail|skip);
- the driver dying loses nothing written: chunk files are atomic, so a rerun of the same command
  rescores only the chunks that were not on disk yet.

Bit-identical to `--engine local` when both run on the same kind of device with the same dtype and,
on CPU, the same number of torch threads (`--threads`; a CPU actor reserves that many CPUs): the
engine's CPU kernels split reductions by thread, which moves the last bits of a score.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from corpus.fsutil import write_parquet_atomic
from corpus.rewrite import (
    SCORES_DIR,
    ProgressCallback,
    RewriteConfig,
    RewriteProgress,
    RewriteResult,
    run_rewrite,
)
from corpus.scores import (
    DONE_MARKER,
    SKIPPED_MARKER,
    ShardScoreSummary,
    chunk_counts,
    chunk_name,
    fields_from_metadata,
    finish_shard,
    shard_key,
)
from scoring import EngineConfig, Fingerprint
from scoring.errors import ConfigError, InputError, JobCancelledError
from scoring.types import DocScore

if TYPE_CHECKING:
    from corpus.ray_stages import ModelPair

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'reweigh[ray]'  (or: pip install 'ray[data]>=2.40')"
_CHUNK_FILE = re.compile(r"chunk-(\d+)\.parquet")
_CONNECT_LOCK = threading.Lock()


def require_ray() -> ModuleType:
    """Imports ray, or says how to install it (ray is an optional extra)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            f"--engine ray needs the optional Ray extra, which is not installed: {INSTALL_HINT}"
        )
    import ray

    try:
        import ray.data
    except ImportError as exc:  # ray without its [data] extra
        raise ConfigError(f"--engine ray needs Ray Data ({exc}): {INSTALL_HINT}") from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run. Validated when built; combinations with the engine in `check`."""

    address: str | None = None  # None: a Ray already initialised in this process, else a local one
    actors: int = 1  # teacher/reference pairs, i.e. model replicas
    gpus_per_actor: float = 0.0  # 1 on a GPU cluster; a fraction packs several small pairs per GPU
    # Per read task. 0: reads are light next to scoring and bounded by Ray Data's backpressure, and a
    # reserved share could starve them when the actors hold every CPU (a CPU-only cluster): a deadlock.
    read_cpus: float = 0.0
    max_restarts: int = 4  # per actor
    max_task_retries: int = 3  # per chunk whose actor died

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ConfigError(f"actors={self.actors} must be at least 1")
        if self.gpus_per_actor < 0:
            raise ConfigError(f"gpus_per_actor={self.gpus_per_actor} must not be negative")
        if self.read_cpus < 0:
            raise ConfigError(f"read_cpus={self.read_cpus} must not be negative")
        if self.max_restarts < 0 or self.max_task_retries < 0:
            raise ConfigError(
                f"max_restarts={self.max_restarts} and max_task_retries={self.max_task_retries} must not be negative"
            )
        if self.address is not None and not (
            self.address == "auto" or self.address.startswith("ray://") or ":" in self.address
        ):
            raise ConfigError(f"address={self.address!r} is not 'auto', ray://host:port or host:port")

    def check(self, engine: EngineConfig) -> None:
        if self.gpus_per_actor > 0 and engine.device == "cpu":
            raise ConfigError(
                f"gpus_per_actor={self.gpus_per_actor} with device='cpu': the GPUs would be reserved and unused"
            )
        if self.gpus_per_actor == 0 and engine.device.startswith("cuda"):
            raise ConfigError(
                f"device={engine.device!r} with gpus_per_actor=0: Ray hides GPUs from actors that reserve none"
            )

    def cpus_per_actor(self, engine: EngineConfig) -> float:
        # On CPU the torch thread count decides the last bits of a score, so an actor reserves
        # exactly the threads it runs; on GPU one CPU feeds the device.
        return float(engine.num_threads or 1) if self.gpus_per_actor == 0 else 1.0


@dataclass
class RayScoringStats:
    """What the Ray pass did, summed over actors (the CLI and bench/ray_rewrite.py print these)."""

    chunks_scored: int = 0
    chunks_reused: int = 0  # already on disk from an earlier, interrupted run
    shards_done: int = 0
    documents: int = 0  # documents in scored chunks (unreadable rows included)
    tokens: int = 0
    score_seconds: float = 0.0  # inside engine.score, all actors together
    forward_seconds: float = 0.0  # of which model forward passes
    probe_seconds: float = 0.0  # the fingerprint probe (one model load)
    ray_seconds: float = 0.0  # wall time of the Ray pass, start-up of actors included
    input_errors: dict[int, str] = field(default_factory=dict)


class _ScoredOnRay:
    """The engine run_rewrite sees: the actors' fingerprint, and no models.

    By the time run_rewrite's step 1 runs, every readable chunk is on disk, so `score` is reached
    only if an input became readable between the Ray pass and step 1.
    """

    def __init__(self, fingerprint: Fingerprint, stats: RayScoringStats) -> None:
        self.fingerprint = fingerprint
        self.stats = stats

    def score(self, texts: Any, progress: Any = None) -> list[DocScore]:
        raise InputError(
            f"{len(texts)} documents were not scored on Ray (an input changed while the job ran?); "
            "rerun the same command to score them"
        )


class RayRewrite:
    """The rewrite job on Ray for one model pair; `stats` describes the last `run`."""

    def __init__(
        self,
        teacher: str | Path,
        reference: str | Path,
        engine_config: EngineConfig,
        options: RayOptions,
        *,
        teacher_revision: str | None = None,
        reference_revision: str | None = None,
        actor_cls: type | None = None,
    ) -> None:
        require_ray()  # fail before any work when the extra is missing
        options.check(engine_config)
        self.options = options
        if engine_config.num_threads is None and options.gpus_per_actor == 0:
            # Explicit, so that the actor's thread count is the one it reserved (see cpus_per_actor).
            engine_config = engine_config.model_copy(update={"num_threads": 1})
        self.engine_config = engine_config
        self.teacher, self.reference = str(teacher), str(reference)
        self.revisions = (teacher_revision, reference_revision)
        self.actor_cls = actor_cls  # tests substitute an actor that dies
        self.stats = RayScoringStats()

    def pair(self) -> ModelPair:
        from corpus.ray_stages import ModelPair

        return ModelPair(self.teacher, self.reference, self.engine_config, *self.revisions)

    def run(
        self,
        config: RewriteConfig,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        keep_connection: bool = False,
    ) -> RewriteResult:
        """`keep_connection`: leave a Ray this call started running for later jobs of the process
        (the service); otherwise (the CLI) it is shut down at the end."""
        ray = require_ray()
        self.stats = RayScoringStats()
        started_here = _connect(ray, self.options.address)
        try:
            self._check_cluster(ray)
            fingerprint = self._probe(ray)
            engine = _ScoredOnRay(fingerprint, self.stats)

            def prescore(out: Path, emit: ProgressCallback) -> None:
                self._score_shards(ray, config, fingerprint.digest, out, emit, cancel)

            return run_rewrite(config, engine, progress=progress, cancel=cancel, prescore=prescore)
        finally:
            if started_here and not keep_connection:
                ray.shutdown()

    # ------------------------------------------------------------------------------------ steps

    def _remote_resources(self) -> dict[str, float]:
        resources = {"num_cpus": self.options.cpus_per_actor(self.engine_config)}
        if self.options.gpus_per_actor:
            resources["num_gpus"] = self.options.gpus_per_actor
        return resources

    def _check_cluster(self, ray: ModuleType) -> None:
        # Ray Data waits for actors it cannot place (an autoscaler may add nodes), which looks like
        # a hang on a fixed cluster: say so up front.
        have = ray.cluster_resources()
        for name, key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            need = self._remote_resources().get(name, 0.0) * self.options.actors
            if need > have.get(key, 0.0):
                log.warning(
                    "%d actors need %g %s in all but the cluster has %g: the job waits for the "
                    "autoscaler, or forever on a fixed cluster (lower --actors)",
                    self.options.actors,
                    need,
                    key,
                    have.get(key, 0.0),
                )

    def _probe(self, ray: ModuleType) -> Fingerprint:
        from corpus.ray_stages import probe_fingerprint

        started = time.perf_counter()
        probe = ray.remote(max_retries=self.options.max_task_retries, **self._remote_resources())
        body: dict[str, Any] = ray.get(probe(probe_fingerprint).remote(self.pair()))
        digest = body.pop("digest")
        fingerprint = Fingerprint(**body)
        if fingerprint.digest != digest:  # a driver and workers running different reweigh code
            raise ConfigError(
                f"the workers' fingerprint {digest[:12]} does not recompute here ({fingerprint.digest[:12]}): "
                "install the same reweigh version on the driver and every node"
            )
        self.stats.probe_seconds = time.perf_counter() - started
        return fingerprint

    def _score_shards(
        self,
        ray: ModuleType,
        config: RewriteConfig,
        digest: str,
        out: Path,
        emit: ProgressCallback,
        cancel: threading.Event | None,
    ) -> None:
        from corpus import ray_stages as st

        started = time.perf_counter()
        shards: dict[int, _ShardState] = {}
        for index, path in enumerate(config.inputs):
            shard_dir = out / SCORES_DIR / shard_key(index, path)
            if (shard_dir / DONE_MARKER).is_file() or (shard_dir / SKIPPED_MARKER).is_file():
                continue
            shards[index] = _ShardState(path, shard_dir, _chunks_on_disk(shard_dir))
            self.stats.chunks_reused += len(shards[index].present)
        if not shards:
            return
        total = len(config.inputs)
        base_done = total - len(shards)
        settings = st.ReadSettings(config.text_field, config.id_field, config.chunk_docs)
        to_read = [st.ShardToRead(i, s.path, frozenset(s.present)) for i, s in shards.items()]
        ds = ray.data.read_datasource(
            st.InputChunksDatasource(to_read, settings),
            num_cpus=self.options.read_cpus,
            override_num_blocks=len(to_read),
        )
        with warnings.catch_warnings():
            # Ray 2.60 deprecates map_batches' **ray_remote_args without a named replacement for
            # max_restarts/max_task_retries yet; they are the documented way to bound actor retries.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                self.actor_cls or st.ScoreActor,
                fn_constructor_args=(self.pair(), digest),
                batch_format="pyarrow",
                batch_size=1,  # chunks are the unit of work; the actor scores each row in its own call
                compute=ray.data.ActorPoolStrategy(size=self.options.actors),
                max_restarts=self.options.max_restarts,
                max_task_retries=self.options.max_task_retries,
                **self._remote_resources(),
            )
        ctx = ds.context
        ctx.max_errored_blocks = 0  # a lost chunk must fail the job, never thin the corpus
        ctx.actor_task_retry_on_errors = False  # Python errors in scoring are deterministic
        ctx.enable_progress_bars = False  # the CLI draws its own
        # A row is already a chunk of chunk_docs documents; Ray would otherwise pack a shard's chunks
        # into blocks of up to 128 MiB, each scored by one actor, and a few large shards would leave
        # most actors idle. One block per chunk lets the pool balance chunk by chunk.
        ctx.target_max_block_size = 1

        batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    if cancel is not None and cancel.is_set():
                        raise JobCancelledError("cancelled while scoring on Ray; a rerun resumes")
                    self._take(row, shards[row["input"]], config.chunk_docs)
                emit(
                    RewriteProgress(
                        "scoring",
                        self.stats.documents,
                        self.stats.tokens,
                        base_done + self.stats.shards_done,
                        total,
                    )
                )
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops Ray's executor (and frees the actors) on an early exit
        self.stats.ray_seconds = time.perf_counter() - started
        for index, state in shards.items():
            if not state.marked and state.error is None:
                log.warning("input %s was not fully scored on Ray; step 1 will handle it", state.path)
            if state.error is not None:
                self.stats.input_errors[index] = state.error

    def _take(self, row: dict[str, Any], state: _ShardState, chunk_docs: int) -> None:
        from corpus import ray_stages as st

        if row["kind"] == st.SCORES:
            table = st.table_from_ipc(row["payload"])
            write_parquet_atomic(state.shard_dir / chunk_name(row["chunk"]), table)
            state.present.add(row["chunk"])
            self.stats.chunks_scored += 1
            self.stats.documents += row["documents"]
            self.stats.tokens += row["tokens"]
            self.stats.score_seconds += row["score_seconds"]
            self.stats.forward_seconds += row["forward_seconds"]
        elif row["kind"] == st.END:
            state.chunks = row["chunk"]
        elif row["kind"] == st.ERROR:
            # Left unmarked: run_rewrite's step 1 re-reads this shard and fails or skips it as a
            # local run would, with the same message.
            state.error = row["message"]
            log.warning("input %s: %s", state.path, row["message"])
        else:
            raise RuntimeError(f"unexpected row kind {row['kind']!r} from the Ray pipeline")
        if not state.marked and state.complete:
            write_done_marker(state.path, state.shard_dir, state.chunks or 0, chunk_docs)
            state.marked = True
            self.stats.shards_done += 1


@dataclass
class _ShardState:
    path: str
    shard_dir: Path
    present: set[int]  # chunk files on disk
    chunks: int | None = None  # known once the reader has reached the end of the shard
    error: str | None = None
    marked: bool = False

    @property
    def complete(self) -> bool:
        return self.error is None and self.chunks is not None and self.present.issuperset(range(self.chunks))


def _chunks_on_disk(shard_dir: Path) -> set[int]:
    if not shard_dir.is_dir():
        return set()
    found = set()
    for p in shard_dir.iterdir():
        m = _CHUNK_FILE.fullmatch(p.name)
        if m and chunk_name(int(m.group(1))) == p.name:
            found.add(int(m.group(1)))
    return found


def write_done_marker(path: str, shard_dir: Path, chunks: int, chunk_docs: int) -> ShardScoreSummary:
    """The completion marker `score_input_shard` writes, computed from the chunk files on disk
    (the driver does not read the input again)."""
    rows = ok = tokens = 0
    schemas = []
    for index in range(chunks):
        table = pq.read_table(shard_dir / chunk_name(index), columns=["status", "n_tokens"])
        chunk_ok, chunk_tokens = chunk_counts(table)
        ok += chunk_ok
        tokens += chunk_tokens
        rows += len(table)
        schemas.append(fields_from_metadata(table.schema))
    return finish_shard(path, shard_dir, rows=rows, ok=ok, tokens=tokens, chunk_docs=chunk_docs, schemas=schemas)


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Joins the Ray of this process, the given cluster, or starts a local one. True if started here."""
    with _CONNECT_LOCK:  # two service jobs starting at once must not both call ray.init
        if ray.is_initialized():
            if address is not None:
                log.info("ray is already initialised in this process; address %s is not used", address)
            return False
        # The workers import reweigh: on a cluster it must be installed on every node (same version).
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        return True


def run_rewrite_on_ray(
    config: RewriteConfig,
    engine_config: EngineConfig,
    teacher: str | Path,
    reference: str | Path,
    *,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    teacher_revision: str | None = None,
    reference_revision: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> RewriteResult:
    """`run_rewrite` with scoring on a Ray cluster: same arguments, same directory, same result.

    For the service: the first call connects this process to `address` (None: a local Ray) and the
    connection stays for later jobs, which may run concurrently (each gets its own actor pool)."""
    job = RayRewrite(
        teacher,
        reference,
        engine_config,
        RayOptions(address=address, actors=actors, gpus_per_actor=gpus_per_actor),
        teacher_revision=teacher_revision,
        reference_revision=reference_revision,
    )
    return job.run(config, progress=progress, cancel=cancel, keep_connection=True)


def ray_job_executor(
    engine_config: EngineConfig,
    teacher: str | Path,
    reference: str | Path,
    *,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
) -> Callable[[RewriteConfig, Any, ProgressCallback, threading.Event], RewriteResult]:
    """The service's JobExecutor (service/jobs.py) for `settings.ray_address`: the service's own
    engine argument is ignored, since the actors load their own pairs from these paths."""
    RayOptions(address=address, actors=actors, gpus_per_actor=gpus_per_actor).check(engine_config)
    require_ray()  # at service start-up, not at the first job

    def execute(
        config: RewriteConfig, _engine: Any, progress: ProgressCallback, cancel: threading.Event
    ) -> RewriteResult:
        return run_rewrite_on_ray(
            config,
            engine_config,
            teacher,
            reference,
            address=address,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            progress=progress,
            cancel=cancel,
        )

    return execute


__all__ = [
    "INSTALL_HINT",
    "RayOptions",
    "RayRewrite",
    "RayScoringStats",
    "ray_job_executor",
    "require_ray",
    "run_rewrite_on_ray",
]
