"""Confining job paths to the configured data roots, decided before anything is read.

A path is refused when it has a `..` component (even one that would stay inside: callers should say
what they mean), is absolute but under no root, or resolves (following every symlink that exists)
to somewhere outside the root it names. Relative paths are taken relative to the first root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from scoring.errors import ConfigError, PathNotAllowedError


class DataRoots:
    def __init__(self, roots: Sequence[Path]) -> None:
        # Roots are compared in resolved form, so a root that is itself a symlink still works.
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self._given = [Path(r) for r in roots]

    def resolve(self, raw: str, field: str) -> Path:
        """The real path `raw` names, or PathNotAllowedError naming `field` and why."""
        if not self.roots:
            raise PathNotAllowedError(
                f"{field}: this service has no data roots configured (REWEIGH_DATA_ROOTS)"
            )
        if not raw or "\x00" in raw:
            raise ConfigError(f"{field}: {raw!r} is not a path")
        parts = PurePosixPath(raw.replace(os.sep, "/")).parts
        if ".." in parts:
            raise PathNotAllowedError(f"{field}: {raw!r} contains '..'")
        path = Path(raw)
        if path.is_absolute():
            root = self._root_of(path)
            if root is None:
                raise PathNotAllowedError(f"{field}: {raw!r} is outside the data roots")
        else:
            root = self.roots[0]
            path = root / path
        real = Path(os.path.realpath(path))  # follows symlinks of every existing component
        if not real.is_relative_to(root):
            raise PathNotAllowedError(f"{field}: {raw!r} leads outside its data root (through a symlink)")
        return real

    def _root_of(self, path: Path) -> Path | None:
        """The root `path` lies under, lexically (symlinks are checked after, on the real path)."""
        normal = Path(os.path.normpath(path))
        for given, real in zip(self._given, self.roots, strict=True):
            if normal.is_relative_to(os.path.normpath(given)):
                return real
            if normal.is_relative_to(real):
                return real
        return None
