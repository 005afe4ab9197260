"""Model-pair options shared by `score`, `rewrite` and `serve`, and the engine built from them."""

from __future__ import annotations

import argparse
import logging

from scoring import EngineConfig, ScoringEngine


def add_engine_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = parser.add_argument_group("models")
    g.add_argument("--teacher", required=required, help="teacher model directory (or hub id with network)")
    g.add_argument("--reference", required=required, help="reference model directory (same tokenizer)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bf16 where the hardware multiplies it natively (AMX, AVX512-BF16, GPUs), else fp32")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--max-length", type=int, default=None, help="tokens per window (default: model context, at most 2048)")
    g.add_argument("--window-overlap", type=int, default=None, help="context tokens re-read by each later window (default max_length/4)")
    g.add_argument("--token-budget", type=int, default=16384, help="padded tokens per forward batch")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--batch-invariant", action="store_true", default=None,
                   help="score each window alone, so a score never depends on its batch-mates (slower on short documents)")
    g.add_argument("--cache", default=None, metavar="PATH", help="SQLite score cache: documents already scored by this pair are not recomputed")


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        dtype=args.dtype,
        device=args.device,
        max_length=args.max_length,
        window_overlap=args.window_overlap,
        token_budget=args.token_budget,
        num_threads=args.threads,
        batch_invariant=bool(args.batch_invariant),
    )


def engine_from_args(args: argparse.Namespace) -> ScoringEngine:
    # transformers' per-load progress bars are noise next to our own.
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # retries of a hub lookup: one error is enough
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return ScoringEngine.from_pretrained(args.teacher, args.reference, engine_config_from_args(args), cache=args.cache)
