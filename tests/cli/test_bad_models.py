"""A bad model argument gets one line on stderr and exit code 2 from every CLI entry point, never a
transformers / huggingface_hub traceback (issue 9)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoConfig

from service.cli import main
from tests.service.live import REPO

BadModel = Callable[[Path, Path], str]  # (good teacher dir, scratch dir) -> the bad --teacher value


def _copy_without(names: tuple[str, ...]) -> BadModel:
    def make(good: Path, scratch: Path) -> str:
        bad = scratch / "model"
        shutil.copytree(good, bad)
        for name in names:
            (bad / name).unlink()
        return str(bad)

    return make


def _copy_with(name: str, content: str) -> BadModel:
    def make(good: Path, scratch: Path) -> str:
        bad = scratch / "model"
        shutil.copytree(good, bad)
        (bad / name).write_text(content)
        return str(bad)

    return make


def _not_causal(good: Path, scratch: Path) -> str:
    AutoConfig.for_model("vit", hidden_size=32, num_hidden_layers=1).save_pretrained(scratch / "vit")
    return str(scratch / "vit")


def _a_file(good: Path, scratch: Path) -> str:
    return str(good / "config.json")


CASES: dict[str, tuple[BadModel, str]] = {
    "missing directory": (lambda g, s: "/nonexistent/teacher", "no such directory, and not a valid hub id"),
    "a file": (_a_file, "is a file"),
    "no config.json": (_copy_without(("config.json",)), "has no config.json"),
    "config.json not json": (_copy_with("config.json", "{not json"), "cannot read config.json"),
    "config.json a list": (_copy_with("config.json", "[1, 2]"), "config.json holds a list"),
    "unknown model_type": (
        _copy_with("config.json", json.dumps({"model_type": "no-such-arch"})),
        "not a transformers config",
    ),
    "not a causal LM": (_not_causal, "not a causal LM"),
    "no weights": (_copy_without(("model.safetensors",)), "cannot load its weights"),
    "corrupt tokenizer.json": (_copy_with("tokenizer.json", "{oops"), "cannot load its tokenizer"),
    "no tokenizer files": (
        _copy_without(("tokenizer.json", "tokenizer_config.json")),
        "cannot load its tokenizer",
    ),
}


def _one_error_line(err: str, expected: str, teacher: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[0] and f"teacher {teacher!r}" in lines[0], lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_score_with_a_bad_teacher_prints_one_line(
    case: str, tiny_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = CASES[case]
    teacher, reference = tiny_pair
    missing = {"config.json", "model.safetensors", "tokenizer.json"} - {p.name for p in teacher.iterdir()}
    assert not missing, f"the tiny pair's layout changed: {missing}"  # the cases above delete these
    bad = make(teacher, tmp_path)
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "hello"}\n')
    argv = ["score", "--teacher", bad, "--reference", str(reference), "--dtype", "float32"]
    assert main([*argv, "-o", str(tmp_path / "out.parquet"), str(data)]) == 2
    _one_error_line(capsys.readouterr().err, expected, bad)
    assert not (tmp_path / "out.parquet").exists()


def test_rewrite_and_serve_refuse_a_bad_teacher_before_starting(
    tiny_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, reference = tiny_pair
    common = ["--teacher", "/nonexistent/teacher", "--reference", str(reference)]
    out = tmp_path / "out"
    assert main(["rewrite", *common, "--out", str(out), str(tmp_path / "in.jsonl")]) == 2
    _one_error_line(capsys.readouterr().err, "no such directory", "/nonexistent/teacher")
    assert not out.exists()
    # serve checks the pair before it binds a port or loads anything (the lifespan would print a traceback).
    assert main(["serve", *common, "--data-root", str(tmp_path), "--port", "1"]) == 2
    _one_error_line(capsys.readouterr().err, "no such directory", "/nonexistent/teacher")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("teacher", "expected"),
    [
        ("/nonexistent", "no such directory, and not a valid hub id"),  # issue 9's command line
        ("models/teacher", "no such directory, so it was looked up as a hub id"),  # a well-formed hub id
    ],
)
def test_a_whole_process_exits_2_with_one_line(
    teacher: str, expected: str, tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """As a user runs it: a whole process, its whole stderr (logging included)."""
    _, reference = tiny_pair
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "hello"}\n')
    argv = ["score", "--teacher", teacher, "--reference", str(reference), "-o", str(tmp_path / "o.parquet")]
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", *argv, str(data)],
        cwd=REPO,
        # Offline, as the tests are: the hub lookup fails at once instead of retrying for ~50 s.
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, expected, teacher)


def test_bad_output_paths_and_counts_get_one_line_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The pair does not exist: these must fail on the argument, before the models are looked at.
    pair = ["--teacher", "/nonexistent/t", "--reference", "/nonexistent/r"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "hello"}\n')
    cases = [
        (["score", *pair, "-o", str(tmp_path), str(data)], "is a directory; give a file name"),
        (["score", *pair, "-o", str(a_file / "out.parquet"), str(data)], "is a file, so nothing can be created"),
        (["score", *pair, "--chunk-docs", "0", "-o", str(tmp_path / "o.parquet"), str(data)], "chunk_docs=0"),
        (["rewrite", *pair, "--out", str(a_file), str(data)], "is a file; give a directory"),
        (["demo", "--docs", "-1", "--no-serve"], "--docs=-1"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)
