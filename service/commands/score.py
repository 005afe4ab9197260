"""`reweigh score`: one output row per input document, in input order.

The documents are scored by the rewrite job's own scoring step (corpus/steps/score.py), into chunk
files in a scratch directory beside the output (in the system's temporary directory when the output is
a store URL); the output is then those chunks' columns, in order, renamed or uploaded whole.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from corpus import storage
from corpus.config import RewriteConfig
from corpus.executor import LocalExecutor, StepProgress
from corpus.layout import scores_dir
from corpus.scores import read_chunk_scores
from corpus.steps.score import ScoreInputs, scored_shards
from scoring.errors import ConfigError, InputError
from service.commands.checks import check_output_path
from service.commands.config_args import add_model_args, as_flags, model_kwargs
from service.commands.engine_args import add_engine_args, pair_from_args

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
_OPTIONS = ("text_field", "id_field", "chunk_docs")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score documents with a teacher/reference pair into a parquet file",
                       description="Score INPUT files (jsonl, jsonl.gz, jsonl.zst, parquet, datasets dir) into OUT.parquet "
                                   "with columns id, n_tokens, teacher_logprob, reference_logprob, score, status.")
    add_engine_args(p)
    p.add_argument("-o", "--output", required=True, help="output parquet file (a path or a store URL: s3://bucket/x.parquet)")
    add_model_args(p, RewriteConfig, _OPTIONS)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="paths or store URLs, globs allowed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = tuple(storage.expand_inputs(args.inputs))  # globs, over a store too, as `reweigh rewrite`
    for path in inputs:
        if not storage.exists(storage.job_path(path)):
            raise InputError(f"input {path!r} does not exist")
    # The job's config validates the options (and holds their one default).
    try:
        config = RewriteConfig(inputs=list(inputs), output=args.output, **model_kwargs(args, _OPTIONS))
    except ConfigError as exc:
        raise as_flags(exc, _OPTIONS) from None
    output = storage.job_path(args.output)
    scratch = _check_output(output)  # before the models load
    spec = pair_from_args(args)
    executor = LocalExecutor()
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=scratch))
    tmp = (work if scratch is None else scratch) / f".{output.name}.{os.getpid()}.tmp"
    bar = tqdm(unit="doc", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    started = time.perf_counter()
    try:
        step = ScoreInputs(work, inputs, spec, config.text_field, config.id_field, config.chunk_docs, "fail")

        def on_progress(p: StepProgress) -> None:
            bar.update(p.documents)

        shards = scored_shards(executor.run(work, step, progress=on_progress))
        documents = 0
        # The pair's fingerprint travels with the scores (`reweigh distill` records what it learnt from).
        fingerprint = executor.scorer(spec).fingerprint.as_dict()
        schema = SCHEMA.with_metadata({b"reweigh.fingerprint": json.dumps(fingerprint, sort_keys=True)})
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False) as writer:
            for index, shard in sorted(shards.items()):
                for chunk in range(shard.chunks):
                    table = read_chunk_scores(scores_dir(work, index, inputs[index]), chunk, SCHEMA.names)
                    writer.write_table(table.cast(schema))
                    documents += len(table)
        # Only a complete file ever carries the output name: a rename, or one whole upload.
        if isinstance(output, Path):
            os.replace(tmp, output)
        else:
            storage.upload_file(tmp, output)
        stats = getattr(executor.scorer(spec), "stats", None)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        executor.close()
    elapsed = time.perf_counter() - started
    if stats is not None:
        print(
            f"scored {documents} documents ({stats.documents - stats.cache_hits} computed, {stats.cache_hits} from cache), "
            f"{stats.tokens} tokens in {elapsed:.1f}s = {stats.tokens / elapsed if elapsed else 0:,.0f} tokens/s, "
            f"padding {stats.padding_fraction:.1%} -> {output}"
        )
    return 0


def _check_output(output: storage.JobPath) -> Path | None:
    """The local directory for the scratch work (beside a local output; the system's temporary
    directory for a store URL, whose bucket must exist), refusing an output that cannot be written."""
    if isinstance(output, Path):
        check_output_path(output, "-o", directory=False)
        output.parent.mkdir(parents=True, exist_ok=True)
        return output.parent
    storage.check_bucket(output)
    if storage.is_dir(output):
        raise ConfigError(f"-o {str(output)!r} is a prefix holding objects; give an object name")
    return None
