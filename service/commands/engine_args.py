"""Model-pair options shared by `score`, `rewrite` and `serve`, derived from EngineConfig."""

from __future__ import annotations

import argparse

from scoring.config import EngineConfig, PairSpec
from scoring.models import check_model_source
from service.commands.config_args import add_model_args, model_kwargs

ENGINE_FIELDS = tuple(EngineConfig.model_fields)
# The flag of `num_threads` predates the derivation; it keeps its short name.
ENGINE_FLAGS = {"num_threads": "--threads"}


def add_engine_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = parser.add_argument_group("models")
    g.add_argument("--teacher", required=required, help="teacher model directory (or hub id with network)")
    g.add_argument("--reference", required=required, help="reference model directory (same tokenizer)")
    add_model_args(g, EngineConfig, ENGINE_FIELDS, flags=ENGINE_FLAGS)
    g.add_argument("--cache", default=None, metavar="PATH", help="SQLite score cache: documents already scored by this pair are not recomputed")


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(**model_kwargs(args, ENGINE_FIELDS))


def pair_from_args(args: argparse.Namespace) -> PairSpec:
    """The pair to load where the job runs (validated now, loaded later: a bad model path is refused
    here in one line, before any input is read, any output created or Ray started)."""
    check_model_source(args.teacher, "teacher")
    check_model_source(args.reference, "reference")
    return PairSpec(args.teacher, args.reference, engine_config_from_args(args), cache=args.cache)
