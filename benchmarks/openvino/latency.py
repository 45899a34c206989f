"""OpenVINO beside ONNX Runtime and eager, in one process, interleaved (``effnet.deploy.bench``).

1. B0 at 224, batch 1 (OpenVINO's LATENCY hint) and batch 32 (THROUGHPUT hint): torchvision eager,
   ours eager, ours and torchvision's export on ONNX Runtime and on OpenVINO, with each row's ratio
   to torchvision eager and to the physical limit. Batch 1 also times, in the same rotation, both
   exports on OpenVINO in bf16 (this CPU's AMX units; OpenVINO's own default here) and our int8
   QDQ file (``effnet quantize``'s format, calibrated on noise: speed only) on both engines.
2. B0-B3 and Lite0 at their resolutions, batch 1: eager / ONNX Runtime / OpenVINO, with the parity
   of each export against eager as ``effnet export`` checks it.
3. OpenVINO in bf16 on this CPU's bf16 units, speed and error, for B0 at batch 1.

    python benchmarks/openvino/latency.py --out benchmarks/openvino/latency.json

Run it alone on the machine: a second CPU-heavy process distorts every number."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import effnet
from effnet.compress.quantize import quantize_onnx
from effnet.core.machine import machine
from effnet.deploy.bench import _rows, bench, build_engines, time_interleaved
from effnet.deploy.export import export
from effnet.deploy.openvino import OpenVinoModel
from effnet.deploy.roofline import peak_gflops
from effnet.deploy.runtime import OnnxModel
from effnet.models.flops import count_macs
from effnet.models.registry import resolve_config

B0_ENGINES = ["torchvision", "effnet", "effnet_onnxruntime", "torchvision_onnxruntime", "effnet_openvino",
              "torchvision_openvino"]  # fmt: skip
FAMILY = ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_lite0"]


def parity(name: str, scratch: Path) -> dict:
    """max |export - eager| / output scale, as ``effnet export`` measures it, for both formats."""
    torch.manual_seed(0)
    model = effnet.create_model(name)
    onnx = export(model, scratch / f"{name}.onnx", dynamic_batch=True)
    ir = export(model, scratch / f"{name}.xml", format="openvino", dynamic_batch=True)
    return {"onnx_relative_diff": onnx.relative_diff, "openvino_relative_diff": ir.relative_diff}


def b0_batch1(scratch: Path, threads: int, peak: float, min_seconds: float) -> list:
    """Every B0 engine at batch 1 in one rotation: f32, bf16 and int8 side by side."""
    runners = build_engines("efficientnet_b0", 224, threads, scratch, B0_ENGINES, "latency", "f32")
    bf16 = build_engines("efficientnet_b0", 224, threads, scratch, ["effnet_openvino", "torchvision_openvino"],
                         "latency", "bf16")  # fmt: skip
    runners.update({f"{k}_bf16": v for k, v in bf16.items()})
    torch.manual_seed(0)
    fp32 = export(effnet.create_model("efficientnet_b0"), scratch / "b0_fp32.onnx", dynamic_batch=True).path
    noise = [np.random.default_rng(i).standard_normal((8, 3, 224, 224)).astype(np.float32) for i in range(4)]
    quantize_onnx(fp32, scratch / "b0_int8.onnx", noise)
    ort = OnnxModel(scratch / "b0_int8.onnx", threads=threads).session
    runners["effnet_int8_onnxruntime"] = lambda x: ort.run(None, {"image": x.numpy()})
    ov = OpenVinoModel(scratch / "b0_int8.onnx", threads, hint="latency").runner
    runners["effnet_int8_openvino"] = lambda x: ov.run(x.numpy())
    x = torch.randn(1, 3, 224, 224)
    times = time_interleaved(runners, x, warmup=3, min_runs=20, min_seconds=min_seconds, progress=True,
                             label="efficientnet_b0 b1")  # fmt: skip
    limit_ms = 2 * count_macs(resolve_config("efficientnet_b0"), 224) / (peak * 1e9) * 1e3
    return _rows("efficientnet_b0", 1, 224, threads, times, limit_ms)


def bf16_error(scratch: Path, threads: int) -> dict:
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0").eval()
    path = export(model, scratch / "b0.xml", format="openvino", dynamic_batch=True).path
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
    got = OpenVinoModel(path, threads, precision="bf16")(x)
    scale = expected.abs().max().item()
    same_top1 = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    return {"relative_diff": (got - expected).abs().max().item() / scale, "same_top1_fraction": same_top1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    peak = peak_gflops(args.threads)
    common = {"threads": args.threads, "min_seconds": args.min_seconds, "min_runs": 20, "peak": peak,
              "progress": True}  # fmt: skip
    result = {"threads": args.threads, "peak_gflops_fp32": peak, "machine": machine()}
    with tempfile.TemporaryDirectory() as scratch:
        rows = b0_batch1(Path(scratch), args.threads, peak, args.min_seconds)
    rows += bench(["efficientnet_b0"], [32], engines=B0_ENGINES, ov_hint="throughput", **common)
    result["b0"] = [r.to_dict() for r in rows]
    family = bench(FAMILY, [1], engines=["effnet", "effnet_onnxruntime", "effnet_openvino"], **common)
    with tempfile.TemporaryDirectory() as scratch:
        checks = {name: parity(name, Path(scratch)) for name in FAMILY}
        result["bf16"] = bf16_error(Path(scratch), args.threads)
    result["family"] = [{**r.to_dict(), **checks[r.model]} for r in family]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in result["b0"] + result["family"]:
        print(f"{r['model']:20s} b{r['batch']:<3d} {r['engine']:24s} {r['median_ms']:8.2f} ms  "
              f"vs torchvision {r['vs_torchvision'] or float('nan'):.2f}  vs limit {r['vs_limit']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
