"""Pruning and int8 of trained task models, through the CLI as a user runs them: the trunk of a
U-Net pruned and fine-tuned, the U-Net and a Faster R-CNN quantized to int8 (ONNX Runtime static
QDQ; the detector's whole graph, NMS included) and scored on the fixed test canvases. Usage:

    python benchmarks/tasks/compress.py --segmenter /tmp/bseg/run-.../best.safetensors \
        --detector /tmp/bdet6/run-.../best.safetensors --work /tmp/bcomp --out benchmarks/tasks/compress.json

The data each model was trained on is found through its file's provenance, as ``effnet eval``
finds it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import timed

from effnet.core.machine import machine


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--detector", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--limit-train", type=int, default=3000)
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"ratio": args.ratio, "finetune_epochs": args.finetune_epochs, "limit_train": args.limit_train,
              "calibration_images": args.calibration_images, "machine": machine()}  # fmt: skip
    base, _ = timed("eval", "--weights", args.segmenter, "--split", "test", "--json")
    pruned_file = args.work / "unet-pruned.safetensors"
    report, seconds = timed("prune", "--weights", args.segmenter, "--ratio", args.ratio, "--finetune-epochs",
                            args.finetune_epochs, "--limit-train", args.limit_train, "--batch-size", 16, "--out",
                            pruned_file, "--json")  # fmt: skip
    pruned, _ = timed("eval", "--weights", pruned_file, "--split", "test", "--json")
    result["segmentation_prune"] = {**report, "seconds": round(seconds, 1), "test_miou_before": base["miou"],
                                    "test_miou_after": pruned["miou"],
                                    "test_foreground_iou_before": base["foreground_iou"],
                                    "test_foreground_iou_after": pruned["foreground_iou"]}  # fmt: skip
    for name, weights in (("segmentation", args.segmenter), ("detection", args.detector)):
        int8 = args.work / f"{name}-int8.onnx"
        report, seconds = timed("quantize", "--weights", weights, "--calibration-images", args.calibration_images,
                                "--split", "test", "--out", int8, "--json")  # fmt: skip
        result[f"{name}_int8"] = {**report, "seconds": round(seconds, 1)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
