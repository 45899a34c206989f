"""Issue 27: B0 against a limit that means something. In one process: the machine's fp32 peak and
copy bandwidth (64 KiB to 512 MiB), every engine's latency at batch 1 and 32 with ``vs_limit``
(arithmetic only) and ``vs_roofline`` (per layer max(FLOPs / peak, bytes / bandwidth)), and where
the eager model's time goes by layer type beside each type's roofline limit (the PNG).

    python benchmarks/roofline/roofline.py --out benchmarks/roofline/roofline.json \
        --plot benchmarks/roofline/b0_layers.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from effnet.core.machine import machine, write_report
from effnet.deploy.bench import bench, layer_breakdowns
from effnet.deploy.roofline import Machine, plot_breakdown, roofline
from effnet.models.registry import create_model

ENGINES = ["torchvision", "effnet", "torchvision_onnxruntime", "effnet_onnxruntime", "torchvision_openvino",
           "effnet_openvino"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    measured = Machine.measure(args.threads)
    rows = bench([args.model], batches, threads=args.threads, min_runs=args.runs, min_seconds=args.min_seconds,
                 engines=ENGINES, peak=measured.peak_gflops, progress=True)  # fmt: skip
    breakdowns = {}
    for batch in batches:
        breakdowns |= layer_breakdowns([args.model], batch, threads=args.threads, peak=measured.peak_gflops)
    size = rows[0].image_size
    limits = {b: sum(c.limit_ms for c in roofline(create_model(args.model), b, size, measured)) for b in batches}
    if args.plot:
        plot_breakdown(breakdowns, args.plot)
    out = {
        "machine": {**machine(), **measured.to_dict()},
        "roofline_ms": {str(b): round(v, 3) for b, v in limits.items()},
        "rows": [r.to_dict() for r in rows],
        "by_layer_type": breakdowns,
    }
    write_report(out, args.out)


if __name__ == "__main__":
    main()
