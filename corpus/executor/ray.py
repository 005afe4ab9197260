"""Runs a step's tasks on a Ray cluster. Transport only: the tasks are `run_task` on the same steps.

- Steps with a scorer run on a pool of actors per scorer spec: each actor builds the scorer once (a
  model load), then takes tasks one at a time, so the pool balances work task by task. A step
  without a scorer runs as plain Ray tasks, `RayOptions.workers` at once, after the pools are
  released (their resources go to those tasks).
- Fault tolerance comes from Ray's own retries, bounded (not left to defaults): an actor that dies
  (preempted node, segfault, CUDA error) is restarted up to `max_restarts` times and its task retried
  up to `max_task_retries` times; a plain task whose worker dies is retried as often. Python
  exceptions are not retried (they would fail the same way again): the job fails and says why.
- The driver dying loses nothing written: workers write each task's files and marker atomically, so
  a rerun of the same job redoes only unfinished tasks (and, inside a scoring task, only chunks that
  were not on disk yet).

Bit-identical to the local executor when scorers run on the same kind of device with the same
dtype and, on CPU, the same number of torch threads (a CPU actor reserves as many CPUs as it runs
threads): CPU kernels split reductions by thread, which moves the last bits of a score.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from corpus import confine
from corpus.config import RayOptions
from corpus.executor.base import (
    Executor,
    Result,
    Step,
    StepContext,
    StepProgressFn,
    finished_result,
    progress_of,
    run_task,
)
from corpus.storage import JobPath
from scoring.config import PairSpec
from scoring.errors import ConfigError, JobCancelledError
from scoring.protocols import Scorer, ScorerSpec

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'reweigh[ray]'  (or: pip install 'ray>=2.40')"
_CONNECT_LOCK = threading.Lock()
_POLL_S = 0.5  # how often a waiting driver looks at the cancel flag


def require_ray() -> ModuleType:
    """Imports ray, or says how to install it (ray is an optional extra)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"the Ray executor needs the optional Ray extra, which is not installed: {INSTALL_HINT}")
    import ray

    return ray


class ScorerWorker:
    """A Ray actor: builds its scorer once, then runs tasks of scoring steps."""

    def __init__(self, spec: ScorerSpec) -> None:
        self.spec = spec
        self._scorer: Scorer | None = None

    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self.spec.build()
        return self._scorer

    def fingerprint(self) -> tuple[str, dict[str, Any]]:
        fingerprint = self.scorer().fingerprint
        return fingerprint.digest, fingerprint.as_dict()

    def run(self, out: JobPath, step: Step, rank: int, roots: tuple[Path | str, ...] | None) -> Result:
        return run_task(out, step, rank, StepContext(scorer=self.scorer, roots=roots))


def _run_plain(out: JobPath, step: Step, rank: int, roots: tuple[Path | str, ...] | None) -> Result:
    return run_task(out, step, rank, StepContext(roots=roots))


class RayExecutor(Executor):
    """`keep_connection`: leave a Ray this executor started running after `close` (the service
    runs many jobs in one process); otherwise (the CLI) it is shut down."""

    def __init__(self, options: RayOptions, *, keep_connection: bool = False) -> None:
        self.ray = require_ray()
        self.options = options
        self._started_here = _connect(self.ray, options.address) and not keep_connection
        self._pools: dict[ScorerSpec, list[Any]] = {}

    # ------------------------------------------------------------------------------------ scorers

    def _actor_resources(self, spec: ScorerSpec) -> dict[str, float]:
        cpus = 1.0
        pair = getattr(spec, "pair", spec)  # a cascade's actor runs its pair (CascadeSpec.pair)
        if isinstance(pair, PairSpec):
            cpus = self.options.cpus_per_actor(ray_pair(pair, self.options).engine)
        resources = {"num_cpus": cpus}
        if self.options.gpus_per_actor:
            resources["num_gpus"] = self.options.gpus_per_actor
        return resources

    def _pool(self, spec: ScorerSpec) -> list[Any]:
        if spec not in self._pools:
            resources = self._actor_resources(spec)
            self._warn_if_unplaceable(resources)
            actor = self.ray.remote(
                max_restarts=self.options.max_restarts,
                max_task_retries=self.options.max_task_retries,
                **resources,
            )(ScorerWorker)
            self._pools[spec] = [actor.remote(spec) for _ in range(self.options.actors)]
        return self._pools[spec]

    def _warn_if_unplaceable(self, resources: dict[str, float]) -> None:
        # Ray waits for actors it cannot place (an autoscaler may add nodes), which looks like a
        # hang on a fixed cluster: say so up front.
        have = self.ray.cluster_resources()
        for name, key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            need = resources.get(name, 0.0) * self.options.actors
            if need > have.get(key, 0.0):
                log.warning(
                    "%d actors need %g %s in all but the cluster has %g: the job waits for the "
                    "autoscaler, or forever on a fixed cluster (lower the actors)",
                    self.options.actors,
                    need,
                    key,
                    have.get(key, 0.0),
                )

    def fingerprint(self, spec: ScorerSpec) -> dict[str, Any]:
        """From every actor of the pool: a node whose device or dtype resolves differently would
        mix incomparable scores, so they must agree."""
        found = self._get([a.fingerprint.remote() for a in self._pool(spec)])
        digests = {digest for digest, _ in found}
        if len(digests) > 1:
            raise ConfigError(
                f"the scorer actors resolve to different fingerprints ({sorted(d[:12] for d in digests)}): "
                "the cluster's nodes differ in device or dtype; pass --device and --dtype explicitly"
            )
        return dict(found[0][1])

    # ------------------------------------------------------------------------------------ steps

    def run(
        self,
        out: JobPath,
        step: Step,
        *,
        progress: StepProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Result]:
        emit = progress or (lambda _p: None)
        results: dict[int, Result] = {}
        todo = []
        for rank in range(step.tasks):
            done = finished_result(out, step, rank)  # a small JSON in the job directory
            if done is None:
                todo.append(rank)
            else:
                results[rank] = done
                emit(progress_of(done))
        roots = confine.active_roots()  # this thread's confinement, entered again on the workers
        spec = step.scorer
        if spec is not None:
            idle = list(self._pool(spec))

            def submit(rank: int) -> tuple[Any, Any]:
                actor = idle.pop()
                return actor.run.remote(out, step, rank, roots), actor

            width = len(idle)
        else:
            # The scorers are done for this job: their CPUs and GPUs go to these tasks (on a CPU-only
            # cluster the actors may hold every CPU, and the tasks would wait forever).
            self._release_scorers()
            plain = self.ray.remote(num_cpus=1, max_retries=self.options.max_task_retries)(_run_plain)

            def submit(rank: int) -> tuple[Any, Any]:
                return plain.remote(out, step, rank, roots), None

            width = self.options.workers
        queue = deque(todo)
        running: dict[Any, tuple[int, Any]] = {}
        try:
            while True:
                while len(running) < width and queue:
                    rank = queue.popleft()
                    ref, actor = submit(rank)
                    running[ref] = (rank, actor)
                if not running:
                    break
                ready, _ = self.ray.wait(list(running), num_returns=1, timeout=_POLL_S)
                if cancel is not None and cancel.is_set():
                    raise JobCancelledError(f"cancelled while running step {step.name!r}")
                for ref in ready:
                    rank, actor = running.pop(ref)
                    if actor is not None:
                        idle.append(actor)
                    results[rank] = self._get([ref])[0]
                    emit(progress_of(results[rank]))
        finally:
            for ref in running:
                self.ray.cancel(ref)
        return [results[r] for r in range(step.tasks)]

    def _get(self, refs: list[Any]) -> list[Any]:
        try:
            return list(self.ray.get(refs))
        except self.ray.exceptions.RayTaskError as exc:
            # The step's own error (InputError, ConfigError...), as the local executor raises it.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def _release_scorers(self) -> None:
        for pool in self._pools.values():
            for actor in pool:
                self.ray.kill(actor)
        self._pools.clear()

    def close(self) -> None:
        self._release_scorers()
        if self._started_here:
            self.ray.shutdown()


def ray_pair(pair: PairSpec, options: RayOptions) -> PairSpec:
    """The pair as Ray actors load it: checked against the options and, on CPU, pinned to an
    explicit thread count, the one each actor reserves (see cpus_per_actor)."""
    options.check(pair.engine)
    if pair.cache is not None:
        raise ConfigError("a score cache is not supported on Ray (one SQLite file cannot serve a cluster)")
    if pair.engine.num_threads is None and options.gpus_per_actor == 0:
        pair = replace(pair, engine=pair.engine.model_copy(update={"num_threads": 1}))
    return pair


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


__all__ = ["INSTALL_HINT", "RayExecutor", "ray_pair", "require_ray"]
