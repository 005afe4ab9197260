"""What the machine is, in one line, for every benchmark's output.

Figures from an AVX2-only CPU (bf16 emulated) and from one with AVX512-BF16 or AMX are not comparable,
so each benchmark prints the CPU model, its core count and the flags that decide matmul speed.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from scoring.models import cpu_has_native_bf16

# The instruction sets that decide fp32/bf16 matmul throughput on x86.
MATMUL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """'<model>, <n> cores, flags <f1+f2...>, native bf16: <bool>' (the model from `platform` where
    `cpuinfo` cannot be read)."""
    model, flags = platform.processor() or "unknown CPU", set[str]()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = "+".join(f for f in MATMUL_FLAGS if f in flags) or "none"
    return f"{model}, {os.cpu_count()} cores, flags {wanted}, native bf16: {cpu_has_native_bf16()}"
