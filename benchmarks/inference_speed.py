"""Eager CPU inference latency: effnet vs timm vs torchvision, same architecture, one process.

Models are timed interleaved (A, B, C, A, B, C, ...) so that noise from other work on a
shared machine hits all of them alike; each figure is the median of the rounds, and every
row also reports its ratio to torchvision in the same run.

    python benchmarks/inference_speed.py --model efficientnet_b0 --batch-sizes 1,32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import timm
import torch
import torchvision

import effnet
from effnet.core.machine import machine
from effnet.models.fuse import fuse_batchnorm


def build(impl: str, name: str) -> torch.nn.Module:
    if impl == "effnet":
        return effnet.create_model(name)
    if impl == "effnet_fused":  # BatchNorm folded into the convs: fuse_batchnorm
        return fuse_batchnorm(effnet.create_model(name))
    if impl == "timm":
        return timm.create_model(name)
    return getattr(torchvision.models, name)()


def time_once(model, x) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=0, help="0: 40 rounds at batch 1, 8 above")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    impls = ["torchvision", "timm", "effnet", "effnet_fused"]
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    models = {}
    for impl in impls:
        for layout, fmt in layouts.items():
            models[(impl, layout)] = build(impl, args.model).eval().to(memory_format=fmt)

    rows = []
    for bs in map(int, args.batch_sizes.split(",")):
        rounds = args.rounds or (40 if bs == 1 else 8)
        inputs = {
            layout: torch.randn(bs, 3, args.image_size, args.image_size).to(memory_format=fmt)
            for layout, fmt in layouts.items()
        }
        times = {key: [] for key in models}
        with torch.inference_mode():
            for key, model in models.items():  # warm-up: allocator, oneDNN primitive caches
                for _ in range(3):
                    model(inputs[key[1]])
            for _ in range(rounds):
                for key, model in models.items():
                    times[key].append(time_once(model, inputs[key[1]]))
        for layout in layouts:
            base = statistics.median(times[("torchvision", layout)])
            for impl in impls:
                t = times[(impl, layout)]
                med = statistics.median(t)
                rows.append(
                    {
                        "impl": impl,
                        "layout": layout,
                        "batch": bs,
                        "median_ms": med * 1e3,
                        "iqr_ms": (statistics.quantiles(t, n=4)[2] - statistics.quantiles(t, n=4)[0]) * 1e3,
                        "images_per_s": bs / med,
                        "vs_torchvision": med / base,
                        "rounds": rounds,
                    }
                )

    record = machine()
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    print(f"# {args.model} at {args.image_size}px, {args.threads} threads")
    print(f"# {record['cpu']}, {record['cpus']} CPUs, flags {' '.join(record['cpu_flags']) or 'none'}; {versions}")
    print(f"{'impl':<13} {'layout':<14} {'batch':>5} {'median ms':>10} {'IQR ms':>8} {'img/s':>8} {'vs tv':>6}")
    for r in rows:
        print(
            f"{r['impl']:<13} {r['layout']:<14} {r['batch']:>5} {r['median_ms']:>10.1f} {r['iqr_ms']:>8.1f} "
            f"{r['images_per_s']:>8.1f} {r['vs_torchvision']:>6.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "threads": args.threads, "machine": record, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
