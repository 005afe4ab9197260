"""Confining job paths to the configured data roots, decided before anything is read or created.

A path is refused (403) when it has a `..` component (even one that would stay inside: callers
should say what they mean), is absolute but under no root, or resolves (following every symlink
that exists) to somewhere outside the root it names. Relative paths are taken relative to the first
root. A path that the file system cannot use is refused (422) too: a component over the file
system's name limit, a path over its length limit, a symlink loop, or a file where a directory must
be. This is the submit-time check; corpus/confine.py checks again each time a job opens a file.

A root may be an object-store prefix (s3://bucket/data): a URL is allowed when it lies under one, with
no empty, `.` or `..` segment (a store has no symlinks to follow). A relative path is always local.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from corpus.confine import is_url_root, url_under
from corpus.storage import JobPath, RemotePath, is_remote
from scoring.errors import ConfigError, InputError, PathNotAllowedError


def scrub(text: str, roots: Sequence[Path]) -> str:
    """`text` with every root's server path cut out (messages quote the paths they name)."""
    for root in sorted(roots, key=lambda r: len(str(r)), reverse=True):
        text = text.replace(str(root) + os.sep, "").replace(str(root), ".")
    return text


class DataRoots:
    def __init__(self, roots: Sequence[Path | str]) -> None:
        local = [r for r in roots if not is_url_root(r)]
        # Roots are compared in resolved form, so a root that is itself a symlink still works.
        self.roots = [Path(os.path.realpath(r)) for r in local]
        self._given = [Path(r) for r in local]
        self.url_roots = [str(r).rstrip("/") + "/" for r in roots if is_url_root(r)]

    @property
    def confinement(self) -> list[Path | str]:
        """What a job runs confined to (corpus/confine.py): the local roots and the URL prefixes."""
        return [*self.roots, *self.url_roots]

    def resolve(self, raw: str, field: str) -> JobPath:
        """The real path (or store URL) `raw` names, or PathNotAllowedError naming `field` and why."""
        if not self.roots and not self.url_roots:
            raise PathNotAllowedError(
                f"{field}: this service has no data roots configured (REWEIGH_DATA_ROOTS)"
            )
        if not raw or "\x00" in raw:
            raise ConfigError(f"{field}: {raw!r} is not a path")
        if is_remote(raw):
            if not url_under(raw, self.url_roots):
                raise PathNotAllowedError(f"{field}: {raw!r} is outside the data roots")
            return RemotePath(raw.rstrip("/"))
        if not self.roots:
            raise PathNotAllowedError(f"{field}: {raw!r} is a local path; this service's data roots are URLs")
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
        self._check_lengths(path, root, raw, field)
        real = Path(os.path.realpath(path))  # follows symlinks of every existing component
        if not real.is_relative_to(root):
            raise PathNotAllowedError(f"{field}: {raw!r} leads outside its data root (through a symlink)")
        self._check_usable(real, raw, field)
        return real

    def relative(self, path: str) -> str:
        """`path` relative to the root it lies under (what clients may see); else its last name."""
        for url_root in self.url_roots:
            if path.startswith(url_root):
                return path[len(url_root) :]
        p = Path(path)
        for root in self.roots:
            if p.is_relative_to(root):
                return str(p.relative_to(root))
        return p.name

    def scrub(self, text: str, *, urls: bool = False) -> str:
        """`text` without server paths; with `urls`, store paths made relative to their root too
        (for records shown as data, like an export's; error messages keep the URL the client named)."""
        text = scrub(text, self.roots)
        if urls:
            for url_root in sorted(self.url_roots, key=len, reverse=True):
                text = text.replace(url_root, "")
        return text

    @staticmethod
    def _check_lengths(path: Path, root: Path, raw: str, field: str) -> None:
        try:
            name_max = os.pathconf(root, "PC_NAME_MAX")
            path_max = os.pathconf(root, "PC_PATH_MAX")
        except (OSError, ValueError):
            name_max, path_max = 255, 4096
        for part in path.relative_to(root).parts if path.is_relative_to(root) else path.parts:
            if len(os.fsencode(part)) > name_max:
                raise InputError(
                    f"{field}: {raw!r} has a component of {len(os.fsencode(part))} bytes; this file "
                    f"system allows {name_max}"
                )
        if len(os.fsencode(str(path))) >= path_max:
            raise InputError(
                f"{field}: {raw!r} makes a path of {len(os.fsencode(str(path)))} bytes under its data "
                f"root; this file system allows {path_max - 1}"
            )

    @staticmethod
    def _check_usable(real: Path, raw: str, field: str) -> None:
        try:
            os.stat(real)
        except FileNotFoundError:
            return  # not there yet (an output): fine
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(f"{field}: {raw!r} goes through a symlink loop") from None
            if exc.errno == errno.ENOTDIR:
                raise InputError(f"{field}: {raw!r} lies under a file, not a directory") from None
            raise InputError(f"{field}: {raw!r} cannot be used: {exc.strerror}") from None

    def _root_of(self, path: Path) -> Path | None:
        """The root `path` lies under, lexically (symlinks are checked after, on the real path)."""
        normal = Path(os.path.normpath(path))
        for given, real in zip(self._given, self.roots, strict=True):
            if normal.is_relative_to(os.path.normpath(given)):
                return real
            if normal.is_relative_to(real):
                return real
        return None
