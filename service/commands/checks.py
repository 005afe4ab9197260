"""Checks of command-line output paths, run before any model loads, so a typo costs one line, not a
model load followed by a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from scoring.errors import ConfigError


def check_output_path(path: str | Path, option: str, *, directory: bool) -> None:
    """`path` must be creatable as a file (directory=False) or a directory: its nearest existing
    ancestor must be a writable directory, and the path itself, if it exists, of the right kind."""
    target = Path(path).expanduser().absolute()
    if target.exists() and target.is_dir() != directory:
        kind = "a directory" if target.is_dir() else "a file"
        raise ConfigError(f"{option} {str(path)!r} is {kind}; give {'a directory' if directory else 'a file name'}")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if existing != target and not existing.is_dir():
        raise ConfigError(f"{option} {str(path)!r}: {str(existing)!r} is a file, so nothing can be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {str(path)!r}: {str(existing)!r} is not writable")
