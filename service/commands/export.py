"""`reweigh export --format FORMAT MANIFEST --out DIR`: a finished job in a format that a pretraining
loader reads (mosaicml-streaming MDS, Megatron indexed datasets + blend, HF datasets parquet,
Megatron-Energon WebDatasets + epochized blend).

The flags are derived from `corpus.export.ExportConfig`, the one declaration of an export (the HTTP
route takes the same model as its body)."""

from __future__ import annotations

import argparse
import json
import os
import typing
from typing import Any

from corpus.export import EXPORTERS, ExportConfig, export_config, run_export

_POSITIONAL = "manifest"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a finished job for mosaicml-streaming, Megatron, HF datasets or Megatron-Energon",
        description="Write MANIFEST's documents grouped by repeat count into streams / prefixes / splits "
        "whose weights reproduce the manifest's epoch exactly, plus a stand-alone load_<format>.py "
        "for the trainer's environment and export.json (what was exported, from which manifest).",
    )
    for name, field in ExportConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        if name == _POSITIONAL:
            p.add_argument(name, help=field.description)
        elif name == "format":
            p.add_argument(flag, required=True, choices=sorted(EXPORTERS), help="the loader to export for")
        elif annotation is bool:
            p.add_argument(flag, action="store_true", help=field.description)
        else:
            scalar = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
            p.add_argument(
                flag,
                type=scalar,
                required=field.is_required(),
                default=argparse.SUPPRESS,
                help=f"{field.description or ''} (default: {field.default})".strip(),
            )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    values: dict[str, Any] = {k: getattr(args, k) for k in ExportConfig.model_fields if hasattr(args, k)}
    if (
        values["format"] == "megatron"
        and values.get("tokenizer") is None
        and os.environ.get("REWEIGH_TEACHER")
    ):
        values["tokenizer"] = os.environ["REWEIGH_TEACHER"]  # the teacher's tokenizer, as the service has it
    return export_config(**values)


def run(args: argparse.Namespace) -> int:
    record = run_export(config_from_args(args))
    summary = {k: record[k] for k in ("export", "groups", "loader")}
    print(json.dumps({"out": args.out, **summary}, indent=2))
    return 0
