"""OpenVINO beside ONNX Runtime and eager, in one process, interleaved (``effnet.deploy.bench``).

1. B0 at 224, batch 1 (OpenVINO's LATENCY hint) and batch 32 (THROUGHPUT hint): torchvision eager,
   ours eager, ours and torchvision's export on ONNX Runtime and on OpenVINO, with each row's ratio
   to torchvision eager and to the physical limit.
2. B0-B3 and Lite0 at their resolutions, batch 1: eager / ONNX Runtime / OpenVINO, with the parity
   of each export against eager as ``effnet export`` checks it.
3. OpenVINO in bf16 on this CPU's bf16 units, speed and error, for B0 at batch 1.

    python benchmarks/openvino/latency.py --out benchmarks/openvino/latency.json

Run it alone on the machine: a second CPU-heavy process distorts every number."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

import effnet
from effnet.deploy.bench import bench, peak_gflops
from effnet.deploy.export import export
from effnet.deploy.openvino import OpenVinoModel

B0_ENGINES = ["torchvision", "effnet", "effnet_onnxruntime", "torchvision_onnxruntime", "effnet_openvino",
              "torchvision_openvino"]  # fmt: skip
FAMILY = ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_lite0"]


def cpu_flags() -> list[str]:
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return sorted(wanted & set(text.split()))


def parity(name: str, scratch: Path) -> dict:
    """max |export - eager| / output scale, as ``effnet export`` measures it, for both formats."""
    torch.manual_seed(0)
    model = effnet.create_model(name)
    onnx = export(model, scratch / f"{name}.onnx", dynamic_batch=True)
    ir = export(model, scratch / f"{name}.xml", format="openvino", dynamic_batch=True)
    return {"onnx_relative_diff": onnx.relative_diff, "openvino_relative_diff": ir.relative_diff}


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
    result = {"cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(), "threads": args.threads,
              "peak_gflops_fp32": peak, "openvino": __import__("openvino").__version__,
              "onnxruntime": __import__("onnxruntime").__version__}  # fmt: skip
    rows = bench(["efficientnet_b0"], [1], engines=B0_ENGINES, ov_hint="latency", **common)
    rows += bench(["efficientnet_b0"], [32], engines=B0_ENGINES, ov_hint="throughput", **common)
    rows += bench(["efficientnet_b0"], [1], engines=["torchvision", "effnet_openvino"], ov_precision="bf16", **common)
    for r in rows[-2:]:
        r.engine += "_bf16" if r.engine == "effnet_openvino" else ""
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
