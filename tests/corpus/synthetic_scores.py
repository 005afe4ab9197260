"""Scores chunk files as the score step writes them, without models: for selection tests and
bench/selection.py. Coarse scores (many ties, zeros of both signs), some documents not scored, a
teacher spread for the floor, and content hashes drawn with repeats (duplicates within and across
chunks and inputs). The same seed writes the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus.layout import chunk_name, groups_dir, scores_dir
from corpus.scores import SCORES_SCHEMA, ShardScores, schema_b64

_STATUSES = np.array(["ok", "empty", "too_long: 9000 tokens"], dtype=object)


def synthetic_chunk(
    rows: int, first_row: int, seed: tuple[int, ...], pool: int, decimals: int = 1, proxy: float = 0.0
) -> pa.Table:
    """`proxy`: the share of scored rows a proxy scored (a score, no log-probs), as in a cascade."""
    rng = np.random.default_rng(list(seed))
    ident = rng.integers(0, max(1, pool), rows, dtype=np.uint64)  # equal ids: equal texts
    hashes = np.zeros((rows, 4), dtype=">u8")
    hashes[:, 0] = ident * np.uint64(0x9E3779B97F4A7C15)
    hashes[:, 1] = ident ^ np.uint64(0xBF58476D1CE4E5B9)
    status = _STATUSES[np.searchsorted([0.95, 0.98], rng.random(rows), side="right")]
    ok = status == "ok"
    teacher = rng.normal(-3.0, 0.8, rows)
    reference = rng.normal(-3.5, 0.8, rows)
    score = np.round(teacher - reference, decimals)
    score[score == 0] = np.where(rng.random(int((score == 0).sum())) < 0.5, -0.0, 0.0)
    n_tokens = rng.integers(1, 600, rows)
    by_proxy = ok & (rng.random(rows) < proxy) if proxy else np.zeros(rows, dtype=bool)
    hash_array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), rows, [None, pa.py_buffer(hashes.tobytes())])
    return pa.table(
        {
            "row": pa.array(np.arange(first_row, first_row + rows, dtype=np.int64)),
            "id": pa.array(np.char.mod("d%d", np.arange(first_row, first_row + rows)).astype(object)),
            "content_hash": hash_array,
            "text_bytes": pa.array(n_tokens * 5),
            "n_tokens": pa.array(np.where(ok, n_tokens, 0)),
            "teacher_logprob": pa.array(teacher, mask=~ok | by_proxy),
            "reference_logprob": pa.array(reference, mask=~ok | by_proxy),
            "score": pa.array(score, mask=~ok),
            "status": pa.array(status, pa.string()),
        },
        schema=SCORES_SCHEMA,
    )


def write_synthetic_scores(
    out: Path, inputs: list[str], rows_per_input: list[int], chunk_docs: int, seed: int = 0, decimals: int = 1,
    proxy: float = 0.0,
) -> tuple[tuple[int, ShardScores], ...]:
    """Scores files for `inputs` (names only: nothing reads them) under job directory `out`."""
    total = sum(rows_per_input)
    fields = schema_b64(pa.schema([("text", pa.string())]))
    meta = {b"reweigh.fields": fields.encode()}
    shards = []
    for index, (path, rows) in enumerate(zip(inputs, rows_per_input, strict=True)):
        directory = scores_dir(out, index, path)
        directory.mkdir(parents=True, exist_ok=True)
        ok = tokens = 0
        chunks = 0
        for chunk, start in enumerate(range(0, rows, chunk_docs)):
            table = synthetic_chunk(min(chunk_docs, rows - start), start, (seed, index, chunk), int(total * 0.9), decimals, proxy)
            pq.write_table(table.replace_schema_metadata(meta), directory / chunk_name(chunk))
            status_ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok")
            ok += int(status_ok.sum())
            tokens += int(np.asarray(table.column("n_tokens"))[status_ok].sum())
            chunks += 1
        shards.append((index, ShardScores(path, "jsonl", rows, chunks, ok, tokens, fields)))
    return tuple(shards)


def write_synthetic_labels(
    out: Path, field: str, shards: tuple[tuple[int, ShardScores], ...], chunk_docs: int, labels: list[str], seed: int = 0
) -> None:
    """Group label files as the labels step writes them (corpus/steps/groups.py), aligned with the
    scores chunks: `labels` drawn with unequal odds (the first most often), so groups differ in size."""
    odds = np.arange(len(labels), 0, -1, dtype=np.float64)
    for index, shard in shards:
        directory = groups_dir(out, field, index, shard.input)
        directory.mkdir(parents=True, exist_ok=True)
        for chunk in range(shard.chunks):
            rng = np.random.default_rng([seed, index, chunk, 7])
            drawn = rng.choice(len(labels), size=shard.chunk_rows(chunk_docs, chunk), p=odds / odds.sum())
            pq.write_table(pa.table({"group": pa.array([labels[i] for i in drawn], pa.string())}), directory / chunk_name(chunk))
