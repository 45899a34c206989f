"""Groundwork for issue 27: does bf16 autocast pay for EfficientNet training on this CPU, and where
does it lose? One process, interleaved steps, 2 threads, torchvision's B0 (the bare model, so the
numbers are about the kernels, not effnet's loop), channels_last, AdamW.

    python benchmarks/precision/bf16_probe.py --out benchmarks/precision/bf16_probe.json

Parts: (1) a training step at 64 px, batch 64, in fp32, bf16 autocast, and bf16 autocast with the
depthwise convolutions kept in fp32; (2) the backward of single convolutions (depthwise 3x3 and
5x5, pointwise 1x1) in fp32 and bf16."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

from effnet.core.machine import machine


class Float32Conv(torch.nn.Module):
    """A convolution run in fp32 inside a bf16 autocast region."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return self.conv(x.float())


def depthwise_in_float32(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Conv2d) and child.groups == child.in_channels > 1:
            setattr(module, name, Float32Conv(child))
        else:
            depthwise_in_float32(child)


def training_steps(repeats: int) -> dict:
    x = torch.randn(64, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    setups = {}
    for mode in ("fp32", "bf16", "bf16_depthwise_fp32"):
        torch.manual_seed(0)
        model = torchvision.models.efficientnet_b0(num_classes=10)
        if mode == "bf16_depthwise_fp32":
            depthwise_in_float32(model)
        model = model.to(memory_format=torch.channels_last)
        setups[mode] = (model, torch.optim.AdamW(model.parameters(), 1e-3))

    def step(mode):
        model, optimizer = setups[mode]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times = {mode: [] for mode in setups}
    for _ in range(3):
        for mode in setups:
            step(mode)
    for _ in range(repeats):
        for mode in setups:
            start = time.perf_counter()
            step(mode)
            times[mode].append(time.perf_counter() - start)
    fp32 = statistics.median(times["fp32"])
    return {mode: {"ms_per_step": statistics.median(t) * 1e3, "vs_fp32": statistics.median(t) / fp32}
            for mode, t in times.items()}  # fmt: skip


def conv_backward(groups: int, cin: int, cout: int, k: int, side: int, bf16: bool) -> float:
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(64, cin, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
    times = []
    for _ in range(7):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        start = time.perf_counter()
        y.backward(torch.ones_like(y))
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = {"command": " ".join(["python", *sys.argv]), "machine": machine(), "threads": 2,
           "training_step": training_steps(args.repeats), "conv_backward": []}  # fmt: skip
    for name, shape in (("depthwise 3x3, 96 ch, 32 px", (96, 96, 96, 3, 32)),
                        ("depthwise 5x5, 240 ch, 8 px", (240, 240, 240, 5, 8)),
                        ("pointwise 96->24, 32 px", (1, 96, 24, 1, 32)),
                        ("pointwise 24->144, 16 px", (1, 24, 144, 1, 16))):  # fmt: skip
        fp32, bf16 = conv_backward(*shape, bf16=False), conv_backward(*shape, bf16=True)
        out["conv_backward"].append(
            {"conv": name, "batch": 64, "fp32_ms": fp32, "bf16_ms": bf16, "bf16_vs_fp32": bf16 / fp32}
        )
    print(json.dumps(out, indent=2))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
