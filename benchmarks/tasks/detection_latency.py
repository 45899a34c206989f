"""Issue 28: batch-1 latency of EfficientDet against Faster R-CNN on Lite0, both built for
FMNIST-Det (10 classes, 128 px canvases, the sizes `effnet train` picks from that data), on each
engine both run on — torch eager and ONNX Runtime (their exports, NMS inside) — and OpenVINO for
EfficientDet (torchvision's whole-detector graph is exported for ONNX Runtime only), in one
process, interleaved. Each engine is run as `effnet predict` runs it: one [0, 1] image in.

With ``--weights A.safetensors B.safetensors`` the trained files are timed instead (a trained
detector keeps fewer boxes after its score threshold, which changes NMS's work a little).

    python benchmarks/tasks/detection_latency.py --out benchmarks/tasks/detection_latency.json

Run it alone on the machine (a minute).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from effnet.core.machine import write_report
from effnet.deploy.bench import time_interleaved
from effnet.deploy.export import export
from effnet.deploy.openvino import OpenVinoModel
from effnet.deploy.runtime import OnnxModel
from effnet.models.detection import create_detector
from effnet.models.efficientdet_detector import create_efficientdet
from effnet.weights.io import load

SIDE = 128  # FMNIST-Det's canvases; Faster R-CNN's min_size and EfficientDet's input side alike


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", nargs="*", type=Path, default=[], help="trained detector files to time")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = {
        "faster_rcnn_lite0": create_detector("efficientnet_lite0", head="faster_rcnn", num_classes=10, image_size=SIDE),
        "efficientdet_lite0": create_efficientdet("efficientdet_lite0", num_classes=10, image_size=SIDE),
        "efficientdet_d0": create_efficientdet("efficientdet_d0", num_classes=10, image_size=SIDE),
    }
    models |= {path.stem: load(path) for path in args.weights}
    image = torch.rand(3, SIDE, SIDE)

    def runner(model):
        model.eval()

        def run(x):
            with torch.inference_mode():
                return model([x])

        return run

    runners = {f"{k} eager": runner(m) for k, m in models.items()}
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in models.items():
            path = Path(scratch) / f"{name}.onnx"
            export(model, path, image_size=SIDE)
            runners[f"{name} onnxruntime"] = OnnxModel(path, threads=args.threads)
            if name.startswith("efficientdet"):
                runners[f"{name} openvino"] = OpenVinoModel(path, threads=args.threads)
        runners = {k: (v if k.endswith("eager") else (lambda x, m=v: m([x]))) for k, v in runners.items()}
        times = time_interleaved(runners, image, warmup=5, min_runs=50, min_seconds=5.0, progress=True)
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rows = []
    fastest = min(ms for key, ms in median.items() if key.startswith("faster_rcnn_lite0 "))
    for key, ms in median.items():
        name, engine = key.rsplit(" ", 1)
        same_engine = median.get(f"faster_rcnn_lite0 {engine}")  # None on OpenVINO: Faster R-CNN has no IR
        rows.append({"model": name, "engine": engine, "median_ms": round(ms, 2),
                     "vs_faster_rcnn_lite0_same_engine": round(ms / same_engine, 3) if same_engine else None,
                     "vs_faster_rcnn_lite0_fastest": round(ms / fastest, 3),
                     "params": sum(p.numel() for p in models[name].parameters())})  # fmt: skip
    for row in rows:
        print(row)
    write_report({"image_size": SIDE, "engine": "torch eager", "threads": args.threads, "batch": 1, "rows": rows},
                 args.out)  # fmt: skip


if __name__ == "__main__":
    main()
