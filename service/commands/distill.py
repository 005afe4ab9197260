"""`reweigh distill`: train a proxy scorer on a sample the pair scored, and print its agreement report.

The scores come from `reweigh score` (parquet files) or a rewrite job's directory (its checkpoints
under scores/); `--texts` are the inputs that were scored, in the same order. Scores and texts are
joined by position and checked: the ids must match row by row (and, for a rewrite job, the content
hashes), so a sample joined with the wrong texts is refused rather than learnt from.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from corpus import storage
from corpus.layout import JOB_FILE, SCORES_DIR
from corpus.readers import read_documents
from corpus.storage import JobPath, RemotePath
from scoring.errors import InputError
from scoring.proxy.features import FAMILIES
from scoring.proxy.model import CARD_NAME
from scoring.proxy.train import DistillConfig, Sample, distill, format_report
from scoring.types import content_hash

# `reweigh score` writes the pair's fingerprint into its parquet schema under this key.
FINGERPRINT_KEY = b"reweigh.fingerprint"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="train a fast proxy scorer from the pair's scores of a sample",
        description="Train a proxy that predicts the difference score from text, on the output of `reweigh score` "
        "(or a rewrite job's directory) and the texts it scored; hold out a split and report agreement.",
    )
    p.add_argument("--scores", nargs="+", required=True, metavar="PATH",
                   help="parquet files written by `reweigh score`, or one rewrite output directory (paths or store URLs)")
    p.add_argument("--texts", nargs="+", required=True, metavar="INPUT",
                   help="the scored inputs, in the same order (paths or store URLs)")
    p.add_argument("--tokenizer", required=True, metavar="DIR",
                   help="the pair's tokenizer (the teacher's or reference's directory)")
    p.add_argument("--out", required=True, metavar="PROXY_DIR",
                   help="the proxy directory to write, a path or a store URL (replaced if present)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="id")
    defaults = DistillConfig()
    p.add_argument("--holdout", type=float, default=defaults.holdout, help="share of documents held out for the report")
    p.add_argument("--folds", type=int, default=defaults.folds, help="folds for choosing the model by measurement")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(defaults.families),
                   help="feature families to measure (the best out-of-fold is kept)")
    p.add_argument("--ridge-alphas", nargs="+", type=float, default=list(defaults.ridge_alphas))
    p.add_argument("--hash-bits", type=int, default=defaults.hash_bits, help="log2 of the hashed n-gram columns")
    p.add_argument("--spearman-tolerance", type=float, default=defaults.spearman_tolerance,
                   help="prefer a cheaper feature family within this much out-of-fold Spearman of the best")
    p.set_defaults(func=run)


def _chunk_files(job: JobPath) -> list[JobPath]:
    """A rewrite job's score checkpoints, scores/<shard>/chunk-NNNNN.parquet, in input order."""
    scores = job / SCORES_DIR
    return [
        scores / shard / name
        for shard in storage.names_in(scores)
        for name in storage.names_in(scores / shard)
        if fnmatch.fnmatchcase(name, "chunk-*.parquet")
    ]


def _score_tables(paths: list[JobPath]) -> tuple[pa.Table, dict[str, Any] | None]:
    """The score rows in input order, and the pair's fingerprint when the files carry it."""
    if len(paths) == 1 and storage.is_dir(paths[0]):
        job = paths[0]
        chunks = _chunk_files(job)
        if not chunks:
            raise InputError(f"{str(job)!r} holds no scored chunks under {SCORES_DIR}/ (not a rewrite job directory?)")
        fingerprint = None
        if storage.is_file(job / JOB_FILE):
            fingerprint = storage.read_json(job / JOB_FILE).get("fingerprint", {}).get("engine")
        tables = [storage.read_parquet(c) for c in chunks]
        return pa.concat_tables(tables, promote_options="permissive"), fingerprint
    tables, fingerprints = [], []
    for path in paths:
        if not storage.is_file(path):
            raise InputError(f"scores file {str(path)!r} does not exist")
        table = storage.read_parquet(path)
        meta = table.schema.metadata or {}
        fingerprints.append(json.loads(meta[FINGERPRINT_KEY]) if FINGERPRINT_KEY in meta else None)
        tables.append(table.replace_schema_metadata(None))
    digests = {f["digest"] if f else None for f in fingerprints}
    if len(digests) > 1:
        raise InputError(f"the scores files come from different pairs (fingerprints {sorted(map(str, digests))})")
    return pa.concat_tables(tables), fingerprints[0]


def load_sample(
    score_paths: list[JobPath], text_paths: list[JobPath], text_field: str, id_field: str
) -> tuple[Sample, dict[str, Any] | None]:
    table, fingerprint = _score_tables(score_paths)
    ids = table.column("id").to_pylist()
    hashes = table.column("content_hash").to_pylist() if "content_hash" in table.column_names else None
    texts: list[str] = []
    for path in text_paths:
        if not storage.exists(path):
            raise InputError(f"texts input {str(path)!r} does not exist")
        for doc in read_documents(path, text_field=text_field, id_field=id_field):
            row = len(texts)
            if row >= len(ids):
                raise InputError(f"the texts have more rows than the scores ({len(ids)}): wrong --texts?")
            if str(doc.id) != ids[row]:
                raise InputError(f"row {row}: texts id {doc.id!r} (in {str(path)!r}) but scores id {ids[row]!r}: "
                                 "--texts must be the scored inputs, in the same order")
            text = doc.text if doc.text is not None else ""
            if hashes is not None and hashes[row] is not None and bytes.fromhex(content_hash(text)) != hashes[row]:
                raise InputError(f"row {row} (id {doc.id!r}): the text differs from the one that was scored")
            texts.append(text)
    if len(texts) != len(ids):
        raise InputError(f"the texts have {len(texts)} rows, the scores {len(ids)}: wrong --texts?")

    def floats(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    sample = Sample(texts, floats("score"), floats("teacher_logprob"), [str(s) for s in table.column("status").to_pylist()])
    return sample, fingerprint


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    config = DistillConfig(
        holdout=args.holdout,
        folds=args.folds,
        seed=args.seed,
        families=tuple(args.families),
        ridge_alphas=tuple(args.ridge_alphas),
        hash_bits=args.hash_bits,
        spearman_tolerance=args.spearman_tolerance,
    )
    out = storage.job_path(args.out)
    if isinstance(out, RemotePath):
        storage.check_bucket(out)  # before the sample is read and the proxy trained
    sample, fingerprint = load_sample([storage.job_path(p) for p in args.scores],
                                      [storage.job_path(p) for p in args.texts], args.text_field, args.id_field)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if fingerprint is not None:
        from scoring.fingerprint import tokenizer_sha256

        if fingerprint.get("tokenizer_sha256") not in (None, tokenizer_sha256(tokenizer)):
            raise InputError(f"the tokenizer in {args.tokenizer!r} is not the one of the pair that scored the sample")
    if isinstance(out, Path):
        result = distill(sample, tokenizer, out, config, pair_fingerprint=fingerprint)
    else:
        # Trained into a local directory as usual, then uploaded with proxy.json (what makes a
        # directory a proxy) last, so a half-uploaded proxy is never loadable.
        staging = Path(tempfile.mkdtemp(prefix="reweigh-proxy-"))
        try:
            result = distill(sample, tokenizer, staging / "proxy", config, pair_fingerprint=fingerprint)
            storage.publish_tree(staging / "proxy", out, last=CARD_NAME)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(format_report(result.report))
    print(f"proxy written to {args.out}")
    return 0
