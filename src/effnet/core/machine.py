"""What a benchmark must record about the machine it ran on: figures from a CPU with AMX (bf16/int8
matrix units) are not comparable with figures from one with AVX-512 alone, nor figures from one
library version with another's."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# The libraries whose version moves a benchmark's figures; those not installed are left out.
LIBRARIES = ("torch", "torchvision", "timm", "onnxruntime", "openvino", "nncf", "ai-edge-litert", "executorch",
             "numpy", "pillow")  # fmt: skip


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_flags() -> list[str]:
    """The vector and matrix ISA flags that decide fp32/bf16/int8 speed, from /proc/cpuinfo."""
    return sorted(set(FLAGS) & set(_cpuinfo().split()))


def has_amx() -> bool:
    """Whether the CPU has AMX's bf16 tile units, the only ones on which bf16 training pays
    (benchmarks/precision: without them bf16 autocast is 0.55-0.69x fp32's speed)."""
    return "amx_bf16" in cpu_flags()


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 instructions at all (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def cpu_has_int8_dot() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_flags()))


def library_versions() -> dict[str, str]:
    """Installed versions of LIBRARIES, read from package metadata (nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def machine() -> dict:
    """The record every benchmark writes beside its figures: CPU model, core count, ISA flags,
    the threads torch uses and library versions."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                  if line.startswith("model name")), "")  # fmt: skip
    record = {"cpu": model or platform.processor(), "cpus": os.cpu_count(), "cpu_flags": cpu_flags()}
    try:
        import torch

        record["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return {**record, "versions": library_versions()}


def write_report(result: dict, out=None) -> None:
    """A benchmark's result as JSON on stdout and, with ``out``, in that file, beginning with the
    command that produced it and the machine it ran on."""

    record = {"command": " ".join(["python", *sys.argv]), "machine": machine(), **result}
    text = json.dumps(record, indent=2)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")
