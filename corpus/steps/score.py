"""Step 1: score every input shard (one task per shard) into `scores/<shard>/chunk-NNNNN.parquet`.

A shard that cannot be read fails the job (on_error="fail"), or is recorded as skipped with its
reason (on_error="skip"); a skipped shard is retried when the job is rerun with on_error="fail".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Literal

from corpus.executor.base import Result, StepContext
from corpus.layout import scores_dir
from corpus.scores import ShardScores, score_shard
from corpus.storage import JobPath
from scoring.errors import InputError
from scoring.protocols import ScorerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreInputs:
    out: JobPath
    inputs: tuple[str, ...]
    scorer: ScorerSpec
    text_field: str
    id_field: str
    chunk_docs: int
    on_error: Literal["fail", "skip"]
    name: str = "score"

    @property
    def tasks(self) -> int:
        return len(self.inputs)

    def run(self, rank: int, ctx: StepContext) -> Result:
        path = self.inputs[rank]
        try:
            scores = score_shard(
                path,
                ctx.scorer(),
                scores_dir(self.out, rank, path),
                text_field=self.text_field,
                id_field=self.id_field,
                chunk_docs=self.chunk_docs,
                ctx=ctx,
            )
        except InputError as exc:
            if self.on_error == "fail":
                raise InputError(
                    f"input shard {rank} failed (the job stops; --on-error skip would skip it): {exc}"
                ) from exc
            log.warning("skipping input %s: %s", path, exc)
            return {"input": path, "skipped": str(exc)}
        return {**asdict(scores), "documents": scores.rows}

    def reusable(self, result: Result) -> bool:
        return not ("skipped" in result and self.on_error == "fail")


def scored_shards(results: list[Result]) -> dict[int, ShardScores]:
    """The shards that were read, by input index."""
    fields = ShardScores.__dataclass_fields__
    return {
        i: ShardScores(**{k: v for k, v in r.items() if k in fields})
        for i, r in enumerate(results)
        if "skipped" not in r
    }


def skipped_inputs(results: list[Result]) -> list[tuple[str, str]]:
    return [(r["input"], r["skipped"]) for r in results if "skipped" in r]
