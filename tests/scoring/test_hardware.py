"""The machine line every benchmark prints."""

from __future__ import annotations

from pathlib import Path

from scoring.hardware import cpu_description


def test_cpu_description_names_the_model_and_the_matmul_flags_in_order(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: sse avx512_bf16 fma avx2 amx_tile\n")
    line = cpu_description(info)
    assert line.startswith("Test CPU 9000, ") and "flags avx2+fma+avx512_bf16+amx_tile," in line


def test_cpu_description_without_cpuinfo_still_answers(tmp_path: Path) -> None:
    line = cpu_description(tmp_path / "missing")
    assert "flags none," in line and "native bf16:" in line
