"""`reweigh score`: one output row per input document, in input order."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from corpus.readers import Document, read_documents
from scoring import DocScore, ScoringEngine
from scoring.errors import InputError
from service.commands.engine_args import add_engine_args, engine_from_args

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("n_tokens", pa.int64()),
        ("teacher_logprob", pa.float64()),
        ("reference_logprob", pa.float64()),
        ("score", pa.float64()),
        ("status", pa.string()),
    ]
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score documents with a teacher/reference pair into a parquet file",
                       description="Score INPUT files (jsonl, jsonl.gz, jsonl.zst, parquet, datasets dir) into OUT.parquet "
                                   "with columns id, n_tokens, teacher_logprob, reference_logprob, score, status.")
    add_engine_args(p)
    p.add_argument("-o", "--output", required=True, help="output parquet file")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="id")
    p.add_argument("--chunk-docs", type=int, default=2048, help="documents scored per engine call (bucketing pool)")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.set_defaults(func=run)


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while chunk := list(islice(docs, size)):
        yield chunk


def score_documents(engine: ScoringEngine, docs: list[Document]) -> list[DocScore]:
    """Scores for readable rows; the reader's reason for the others (nothing is dropped)."""
    readable = [d.text for d in docs if d.text is not None]
    scored = iter(engine.score(readable))
    return [next(scored) if d.text is not None else DocScore.not_scored(d.status or "unreadable") for d in docs]


def run(args: argparse.Namespace) -> int:
    if args.chunk_docs < 1:
        raise SystemExit("--chunk-docs must be at least 1")
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not path.exists():
            raise InputError(f"input {str(path)!r} does not exist")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    engine = engine_from_args(args)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    bar = tqdm(unit="doc", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    started = time.perf_counter()
    documents = 0
    try:
        # The pair's fingerprint travels with the scores (`reweigh distill` records what it learnt from).
        schema = SCHEMA.with_metadata({b"reweigh.fingerprint": json.dumps(engine.fingerprint.as_dict(), sort_keys=True)})
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False) as writer:
            for path in inputs:
                for chunk in _chunks(read_documents(path, text_field=args.text_field, id_field=args.id_field), args.chunk_docs):
                    scores = score_documents(engine, chunk)
                    rows: dict[str, list[object]] = {name: [] for name in SCHEMA.names}
                    for doc, s in zip(chunk, scores, strict=True):
                        rows["id"].append(str(doc.id))
                        for key, value in s.as_row().items():
                            rows[key].append(value)
                    writer.write_table(pa.Table.from_pydict(rows, schema=schema))
                    documents += len(chunk)
                    bar.update(len(chunk))
                    bar.set_postfix(tok_s=f"{engine.stats.tokens / max(time.perf_counter() - started, 1e-9):,.0f}")
        os.replace(tmp, output)  # only a complete file ever carries the output name
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    stats = engine.stats
    print(
        f"scored {documents} documents ({stats.documents - stats.cache_hits} computed, {stats.cache_hits} from cache), "
        f"{stats.tokens} tokens in {elapsed:.1f}s = {stats.tokens / elapsed if elapsed else 0:,.0f} tokens/s, "
        f"padding {stats.padding_fraction:.1%} -> {output}"
    )
    return 0
