"""Where the demo's built assets live: one cache root, overridable with REWEIGH_HOME.

Built assets (converted teacher, trained reference, corpus shards) are machine-local and large, so
they live outside the repository; only the small licence-clean corpus subset is committed, in
`embedded/data/`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_HOME = "REWEIGH_HOME"
# Shipped with the package (see pyproject package-data): the committed corpus subset.
PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def home() -> Path:
    """The cache root: $REWEIGH_HOME, else ~/.cache/reweigh. Not created here."""
    value = os.environ.get(ENV_HOME)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "reweigh"


def teacher_dir() -> Path:
    return home() / "models" / "smollm2-135m-instruct"


def reference_dir() -> Path:
    return home() / "models" / "reference"


def corpus_dir() -> Path:
    return home() / "corpus"


def downloads_dir() -> Path:
    """Raw .deb and sdist files, kept so that a rebuild does not fetch them again."""
    return home() / "downloads"


@contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of `out_dir` to build into; on success it replaces `out_dir`, on any
    failure it is removed, so `out_dir` is only ever absent, old and whole, or new and whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared like any model dir
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
