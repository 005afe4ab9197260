"""Exports of a finished rewrite for the loaders pretraining jobs already use.

    from corpus.export import ExportConfig, run_export
    record = run_export(ExportConfig(format="mds", manifest="OUT/manifest.json", out="OUT/export-mds"))

Each format groups documents by repeat count into streams / prefixes / splits whose weights
reproduce the manifest's expanded multiset exactly (see common.py). The formats are written here,
without the loader libraries; each export carries a stand-alone `load_<format>.py` for the
trainer's environment, which refuses a library version the export was not verified with (Energon's
index excepted: its own `prepare_dataset` builds it there, see energon.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus import storage
from corpus.export.common import (
    EXPORT_RECORD,
    ExportConfig,
    ExportFormat,
    ExportOptions,
    ManifestSource,
    export_config,
    staged_directory,
)
from corpus.export.energon import export_energon
from corpus.export.hf import export_hf
from corpus.export.mds import export_mds
from corpus.export.megatron import export_megatron

Exporter = Callable[[ExportConfig, ManifestSource, Path], dict[str, Any]]
EXPORTERS: dict[str, Exporter] = {
    "mds": export_mds,
    "megatron": export_megatron,
    "hf": export_hf,
    "energon": export_energon,
}


def run_export(config: ExportConfig, cancel: threading.Event | None = None) -> dict[str, Any]:
    """Write the export into a staged directory and rename it onto `config.out`; returns the record
    (what `export.json` holds). Setting `cancel` stops it (JobCancelledError) and leaves no directory."""
    source = ManifestSource.open(config.manifest, cancel)
    with staged_directory(storage.job_path(config.out), config.overwrite) as directory:
        return EXPORTERS[config.format](config, source, directory)


__all__ = [
    "EXPORTERS",
    "EXPORT_RECORD",
    "ExportConfig",
    "ExportFormat",
    "ExportOptions",
    "export_config",
    "run_export",
]
