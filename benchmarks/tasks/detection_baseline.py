"""The classical baseline for FMNIST-Det: Otsu's threshold, connected components as boxes, and
each box's crop classified by an effnet classifier trained on Fashion-MNIST items; scored by the
same COCO metrics as the detectors. Usage:

    python benchmarks/tasks/detection_baseline.py --data /tmp/det/fmnist-det-plain \
        --work /tmp/det --out benchmarks/tasks/detection_baseline_plain.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import effnet
from PIL import Image
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from effnet.core.machine import machine
from effnet.datasets.coco import load_detection
from effnet.tasks.detection import coco_metrics
from effnet.weights.trained import load_trained

MIN_AREA = 30  # components smaller than this are noise


def components(grey: np.ndarray) -> list[tuple[int, int, int, int]]:
    mask = grey > threshold_otsu(grey)
    return [(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regionprops(label(mask)) if r.area >= MIN_AREA]


@torch.inference_mode()
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True, help="an fmnist-det folder (effnet data make)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--classifier", type=Path, help="a trained Fashion-MNIST classifier (default: train one)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    weights = args.classifier
    if weights is None:
        run = args.work / "fmnist-classifier"
        if not (run / "best.safetensors").exists():
            recipe = ["--image-size", "32", "--epochs", "2", "--limit-train", "30000"]
            effnet("train", "--data", "fashion-mnist", "--model", "efficientnet_lite0", "--weights", "lite0", *recipe,
                   "--out", run, "--quiet")  # fmt: skip
        weights = run / "best.safetensors"
    model = load_trained(weights).model.eval()
    transform = model.preprocessing.transform()
    data = load_detection(args.data)
    split = data.split("test")
    truth, found = [], []
    for name, boxes, labels in zip(split.files, split.boxes, split.labels, strict=True):
        rgb = Image.open(split.folder / name).convert("RGB")
        grey = np.asarray(rgb.convert("L"))
        candidates = components(grey)
        if candidates:
            crops = torch.stack([transform(rgb.crop(box)) for box in candidates])
            probs = model(crops).softmax(1)
            score, cls = probs.max(1)
            found.append({"boxes": np.array(candidates, float), "labels": cls.numpy() + 1, "scores": score.numpy()})
        else:
            found.append({"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)})
        truth.append({"boxes": boxes, "labels": labels})
    result = coco_metrics(truth, found, data.classes)
    shown = f"WORK/{weights.relative_to(args.work)}" if weights.is_relative_to(args.work) else weights.name
    args.out.write_text(json.dumps({"method": "otsu+components+effnet classifier", "classifier": shown,
                                    "test": result, "machine": machine()}, indent=2) + "\n")  # fmt: skip
    print(json.dumps({k: result[k] for k in ("map", "ap50", "ap75")}))


if __name__ == "__main__":
    main()
