"""What a benchmark must record about the CPU it ran on: figures from a CPU with AMX (bf16/int8
matrix units) are not comparable with figures from one with AVX-512 alone."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """The vector and matrix ISA flags that decide fp32/bf16/int8 speed, from /proc/cpuinfo."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    return sorted(set(FLAGS) & set(text.split()))


def machine() -> dict:
    model = ""
    path = Path("/proc/cpuinfo")
    if path.exists():
        model = next((line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(), "cpu_flags": cpu_flags()}
