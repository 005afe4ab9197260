"""Refuse a loader library this export was not verified with, naming both versions.

Copied into every reweigh export beside its `load_*.py`; it runs in the trainer's environment, where
reweigh is not installed, so it uses the standard library only.
"""

from __future__ import annotations

import importlib.metadata
import re


class UnsupportedVersionError(RuntimeError):
    pass


def release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version string: '0.13.0rc1' -> (0, 13, 0)."""
    match = re.match(r"\d+(\.\d+)*", version)
    if match is None:
        raise UnsupportedVersionError(f"cannot read the version {version!r}")
    return tuple(int(p) for p in match.group(0).split("."))


def check_version(distribution: str, minimum: str, below: str) -> str:
    """The installed version of `distribution` if it is in [minimum, below); else a clear error."""
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise UnsupportedVersionError(
            f"{distribution} is not installed; this export was verified with {distribution}>={minimum},<{below}"
        ) from exc
    if not (release(minimum) <= release(installed) < release(below)):
        raise UnsupportedVersionError(
            f"{distribution} {installed} is installed; this export was verified with "
            f"{distribution}>={minimum},<{below} (pip install '{distribution}>={minimum},<{below}')"
        )
    return installed
