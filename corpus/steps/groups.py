"""Step 1b, with `stratify_by`: each input shard's group labels, one file per scores chunk.

The score checkpoints hold no input fields, so the labels come from a second streaming pass over
each input (one task per shard). They are written per chunk, aligned row for row with the scores
chunks, so a selection task reads the labels of exactly the chunks it reads the scores of. Nothing is
dropped: a row without the field is labelled "(missing)", one that could not be read "(unreadable)".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import islice

import pyarrow as pa

from corpus import storage
from corpus.executor.base import Result, StepContext
from corpus.groups import UNREADABLE, field_value, label_of
from corpus.layout import chunk_name, groups_dir
from corpus.readers import read_documents
from corpus.scores import ShardScores
from corpus.storage import JobPath
from scoring.errors import InputError
from scoring.protocols import ScorerSpec

GROUPS_SCHEMA = pa.schema([("group", pa.string())])


@dataclass(frozen=True)
class LabelGroups:
    out: JobPath
    inputs: tuple[str, ...]
    shards: tuple[tuple[int, ShardScores], ...]  # the scored input shards, by input index
    field: str
    text_field: str
    id_field: str
    chunk_docs: int
    name: str = "groups"
    scorer: ScorerSpec | None = None

    @property
    def tasks(self) -> int:
        return len(self.shards)

    def reusable(self, result: Result) -> bool:
        return True

    def run(self, rank: int, ctx: StepContext) -> Result:
        index, shard = self.shards[rank]
        path = self.inputs[index]
        docs = read_documents(path, text_field=self.text_field, id_field=self.id_field)
        counts: Counter[str] = Counter()
        for chunk in range(shard.chunks):
            ctx.check_cancel(f"labelling {path}")
            want = shard.chunk_rows(self.chunk_docs, chunk)
            labels = [
                label_of(field_value(d.fields, self.field)) if d.readable else UNREADABLE for d in islice(docs, want)
            ]
            if len(labels) != want:
                raise InputError(
                    f"{path!r} has fewer rows than when it was scored: it changed during the job"
                )
            counts.update(labels)
            storage.write_parquet(
                groups_dir(self.out, self.field, index, path) / chunk_name(chunk),
                pa.table({"group": pa.array(labels, pa.string())}),
            )
        if next(docs, None) is not None:
            raise InputError(f"{path!r} has more rows than when it was scored: it changed during the job")
        return {"input": index, "groups": dict(sorted(counts.items()))}


def read_labels(out: JobPath, field: str, index: int, path: str, chunk: int) -> pa.Array:
    return (
        storage.read_parquet(groups_dir(out, field, index, path) / chunk_name(chunk))
        .column("group")
        .combine_chunks()
    )
