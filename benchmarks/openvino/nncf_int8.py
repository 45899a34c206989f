"""Does NNCF's int8 (OpenVINO's own quantizer) pay on this CPU? B0 at 224, batch 1, one rotation.

Rows: ONNX Runtime on torchvision's export (the issue's reference), OpenVINO f32 and bf16 on our IR,
our int8 QDQ file (``effnet quantize``) on ONNX Runtime, and our ONNX export quantized by
``nncf.quantize`` (symmetric int8, OpenVINO's format) compiled twice: with f32 for the layers NNCF
leaves in float, and with OpenVINO's default precision (bf16 on this CPU). Calibration on noise:
this measures speed only.

    pip install nncf   # not one of effnet's dependencies
    python benchmarks/openvino/nncf_int8.py --out benchmarks/openvino/nncf_int8.json

Run it alone on the machine."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import effnet
from effnet.compress.quantize import quantize_onnx
from effnet.core.machine import machine
from effnet.deploy.bench import build_engines, time_interleaved
from effnet.deploy.export import export
from effnet.deploy.runtime import OnnxModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import nncf
    import openvino as ov

    threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        runners = build_engines("efficientnet_b0", 224, threads, scratch,
                                ["torchvision_onnxruntime", "effnet_openvino"], "latency", "f32")  # fmt: skip
        bf16 = build_engines("efficientnet_b0", 224, threads, scratch, ["effnet_openvino"], "latency", "bf16")
        runners["effnet_openvino_bf16"] = bf16["effnet_openvino"]
        torch.manual_seed(0)
        fp32 = export(effnet.create_model("efficientnet_b0"), scratch / "b0.onnx", dynamic_batch=True).path
        noise = [np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32) for i in range(32)]
        quantize_onnx(fp32, scratch / "b0_qdq.onnx", [np.concatenate(noise)])
        session = OnnxModel(scratch / "b0_qdq.onnx", threads=threads).session
        runners["effnet_int8_qdq_onnxruntime"] = lambda x: session.run(None, {"image": x.numpy()})
        core = ov.Core()
        int8 = nncf.quantize(core.read_model(str(fp32)), nncf.Dataset(noise), subset_size=len(noise))
        for label, precision in (("f32", {"INFERENCE_PRECISION_HINT": "f32"}), ("default", {})):
            compiled = core.compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                        "PERFORMANCE_HINT": "LATENCY", **precision})  # fmt: skip
            request = compiled.create_infer_request()
            runners[f"effnet_int8_nncf_openvino_{label}"] = lambda x, r=request: r.infer({0: x.numpy()})
        times = time_interleaved(runners, torch.randn(1, 3, 224, 224), warmup=5, min_runs=30,
                                 min_seconds=args.min_seconds, progress=True, label="b0 b1")  # fmt: skip
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    reference = medians["torchvision_onnxruntime"]
    result = {
        "threads": threads,
        "machine": machine(),
        "rows": [
            {"engine": k, "median_ms": m, "vs_onnxruntime_on_torchvision": m / reference, "runs": len(times[k])}
            for k, m in medians.items()
        ],  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        print(f"{row['engine']:36s} {row['median_ms']:7.2f} ms  {row['vs_onnxruntime_on_torchvision']:.2f}x")


if __name__ == "__main__":
    main()
