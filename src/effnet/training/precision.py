"""Reduced-precision training: which precision a run trains in, and bf16 autocast done the way
that is fastest for EfficientNet on a CPU.

Measured (benchmarks/precision/): on CPUs with AVX512-BF16 but no AMX, plain bf16 autocast trains
B0 at 0.55-0.69x fp32's speed (issue 27's figures); on a Xeon with AMX at 0.54x, because oneDNN's
bf16 depthwise backward is 1.3-4.4x slower than fp32's while the 1x1 convolutions gain (AMX tiles).
Keeping the depthwise convolutions in fp32 inside the autocast region makes bf16 pay there:
`effnet train` B0 at 64 px 1.09x fp32's images per second, Fashion-MNIST test top-1 87.69% against
87.10% (train_throughput.json, accuracy.json). So ``auto`` takes bf16 on AMX CPUs and fp32 on the
others (the table below), and ``bf16`` trains with fp32 depthwise convolutions, fp32 master weights,
fp32 optimizer state and an fp32 EMA (autocast changes only the dtype the matrix kernels compute in).
Only classification was measured: the other tasks (torchvision's detection heads, the decoders)
stay in fp32 under ``auto``. And only large enough steps gain: a compound-scaled phi -3 at 24 px,
batch 32 (0.15 GMACs a step) trains 0.90x as fast in bf16 as in fp32 (the casts cost more than the
tiny matrix products save), B0 at 64 px, batch 64 (2.1 GMACs) 1.09x; ``auto`` takes bf16 from
BF16_MIN_GMACS_PER_STEP on, a threshold between those two measurements.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from effnet.core.errors import UsageError
from effnet.core.machine import cpu_flags, cpu_has_bf16

PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_GMACS_PER_STEP = 1.0
# auto's choice on a CPU, by its best bf16 unit: (flag, precision, why), first match wins.
CPU_TABLE = (
    ("amx_bf16", "bf16", "AMX: bf16 with fp32 depthwise trains B0 1.09x faster than fp32 (benchmarks/precision)"),
    ("avx512_bf16", "fp32", "AVX512-BF16 without AMX: bf16 autocast trains at 0.55-0.69x fp32's speed"),
    ("", "fp32", "no bf16 instructions"),
)


def resolve_precision(requested: str, device: torch.device, task: str = "classification",
                      gmacs_per_step: float | None = None) -> tuple[str, str]:  # fmt: skip
    """The precision a run trains in and why: ``auto`` from the table for classification steps of
    at least BF16_MIN_GMACS_PER_STEP (CUDA: bf16 where the GPU supports it), fp32 for the other
    tasks, smaller steps and models of unknown size; ``bf16`` refused where the hardware has no
    bf16 arithmetic."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not supported:
            raise UsageError("--precision bf16: this GPU has no bf16 support; use --precision fp32 or auto")
        if requested == "auto" and task == "classification":
            return ("bf16", "GPU with bf16 tensor cores") if supported else ("fp32", "GPU without bf16")
        if requested == "auto":
            return "fp32", f"auto: bf16 was measured for classification only, not {task}"
        return requested, "requested"
    if requested == "bf16" and not cpu_has_bf16():
        raise UsageError(
            "--precision bf16: this CPU has no bf16 instructions (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo); "
            "use --precision fp32 or auto"
        )
    if requested != "auto":
        return requested, "requested"
    if task != "classification":
        return "fp32", f"auto: bf16 was measured for classification only, not {task}"
    if gmacs_per_step is None or gmacs_per_step < BF16_MIN_GMACS_PER_STEP:
        size = "unknown" if gmacs_per_step is None else f"{gmacs_per_step:.2f}"
        return "fp32", f"auto: a step of {size} GMACs (bf16 pays from {BF16_MIN_GMACS_PER_STEP:g} on)"
    flags = set(cpu_flags())
    _, chosen, why = next(row for row in CPU_TABLE if not row[0] or row[0] in flags)
    return chosen, why


def autocast(precision: str, device: torch.device):
    """The autocast region of a forward pass in ``precision`` (a no-op for fp32)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def keep_depthwise_fp32(model: nn.Module) -> list:
    """Hooks that run every depthwise convolution of ``model`` in fp32 inside a bf16 autocast
    region (their bf16 kernels are the slow ones on CPUs); returns the handles. The module tree,
    and with it the state dict, stays as it is."""
    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1:
            exits = []

            def before(mod, inputs, exits=exits):
                region = torch.autocast("cpu", enabled=False)
                region.__enter__()
                exits.append(region)
                return tuple(x.float() if torch.is_tensor(x) else x for x in inputs)

            def after(mod, inputs, output, exits=exits):
                exits.pop().__exit__(None, None, None)

            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after, always_call=True)]
    return handles
