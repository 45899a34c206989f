"""FMNIST-Seg and the nuclei image: a U-Net on an effnet trunk trained, evaluated on the test
split, and its masks drawn; for nuclei, Otsu's threshold on the same held-out columns too. Usage:

    python benchmarks/tasks/segmentation.py --work /tmp/seg --dataset fmnist-seg --train 8000 \
        --epochs 5 --out benchmarks/tasks/segmentation_fmnist.json --plot benchmarks/tasks/segmentation_fmnist.png
    python benchmarks/tasks/segmentation.py --work /tmp/seg --dataset nuclei --epochs 60 --batch-size 8 \
        --out benchmarks/tasks/segmentation_nuclei.json --plot benchmarks/tasks/segmentation_nuclei.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import effnet, grid, timed
from PIL import Image
from skimage.filters import threshold_otsu

from effnet.core.machine import machine


def otsu_dice(test: Path) -> dict:
    """Dice and IoU of Otsu's threshold over all test tiles together (one threshold, as a user of
    the classical method would pick it for the image)."""
    names = sorted((test / "images").glob("*.png"))
    grey = np.concatenate([np.asarray(Image.open(p).convert("L")).ravel() for p in names])
    truth = np.concatenate([np.asarray(Image.open(test / "masks" / p.name)).ravel() > 0 for p in names])
    found = grey > threshold_otsu(grey)
    inter = (found & truth).sum()
    return {"dice": float(2 * inter / (found.sum() + truth.sum())), "iou": float(inter / (found | truth).sum())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--dataset", default="fmnist-seg", choices=("fmnist-seg", "nuclei"))
    p.add_argument("--background", default="plain", choices=("plain", "texture"))
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="lite0", help="a pretrained tag, or 'none' for from scratch")
    p.add_argument("--train", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    args = p.parse_args()

    name = args.dataset if args.dataset == "nuclei" else f"{args.dataset}-{args.background}"
    data = args.work / name
    if not data.exists():
        extra = [] if args.dataset == "nuclei" else ["--background", args.background, "--train", args.train]
        effnet("data", "make", args.dataset, "--out", data, *extra, "--json")
    run = args.work / f"run-unet-{args.model}-{args.weights}-{name}"
    weights = [] if args.weights == "none" else ["--weights", args.weights]
    row, train_s = timed("train", "--task", "segmentation", "--model", args.model, *weights, "--data", data,
                         "--epochs", args.epochs, "--batch-size", args.batch_size, "--augment", "light", "--out", run,
                         "--json", "--quiet")  # fmt: skip
    test, eval_s = timed("eval", "--weights", run / "best.safetensors", "--split", "test", "--json")
    result = {"dataset": name, "model": args.model, "weights": args.weights, "epochs": args.epochs,
              "batch_size": args.batch_size, "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
              "last_epoch": row, "test": test, "machine": machine()}  # fmt: skip
    if args.dataset == "nuclei":
        result["otsu_test"] = otsu_dice(data / "test")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        images = sorted((data / "test" / "images").glob("*.png"))[:8]
        effnet("predict", *images, "--weights", run / "best.safetensors", "--out", args.work / f"drawn-{name}",
               "--json")  # fmt: skip
        grid([args.work / f"drawn-{name}" / i.name for i in images], args.plot)
    print(json.dumps({k: test[k] for k in ("miou", "foreground_iou", "mean_dice", "foreground_dice")}))


if __name__ == "__main__":
    main()
