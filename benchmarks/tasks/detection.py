"""FMNIST-Det: a detector on an effnet trunk trained, evaluated on the fixed 2,000 test canvases,
and its predictions drawn. Usage (the committed results came from these commands):

    python benchmarks/tasks/detection.py --work /tmp/det --background plain \
        --train 6000 --epochs 4 --out benchmarks/tasks/detection_plain.json

Everything goes through the effnet CLI, exactly as a user would run it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import effnet, grid, timed

from effnet.core.machine import machine


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True, help="scratch folder for data and runs")
    p.add_argument("--background", default="plain", choices=("plain", "texture"))
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="lite0", help="a pretrained tag, or 'none' for from scratch")
    p.add_argument("--detector", default="faster_rcnn")
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    p.add_argument("--plot", type=Path, help="PNG of predictions on test canvases")
    args = p.parse_args()

    data = args.work / f"fmnist-det-{args.background}"
    if not data.exists():
        effnet("data", "make", "fmnist-det", "--out", data, "--background", args.background, "--train", args.train,
               "--json")  # fmt: skip
    run = args.work / f"run-{args.detector}-{args.model}-{args.weights}-{args.background}"
    weights = [] if args.weights == "none" else ["--weights", args.weights]
    row, train_s = timed("train", "--task", "detection", "--detector", args.detector, "--model", args.model, *weights,
                         "--data", data, "--epochs", args.epochs, "--batch-size", args.batch_size, "--out", run,
                         "--json", "--quiet")  # fmt: skip
    test, eval_s = timed("eval", "--weights", run / "best.safetensors", "--split", "test", "--json")
    result = {"background": args.background, "model": args.model, "weights": args.weights, "detector": args.detector,
              "train_canvases": args.train, "epochs": args.epochs, "batch_size": args.batch_size,
              "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1), "last_epoch": row,
              "test": test, "machine": machine()}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        images = sorted((data / "test" / "images").glob("*.png"))[:8]
        effnet("predict", *images, "--weights", run / "best.safetensors", "--out", args.work / "drawn", "--json")
        grid([args.work / "drawn" / i.name for i in images], args.plot)
    print(json.dumps({k: test[k] for k in ("map", "ap50", "ap75")}))


if __name__ == "__main__":
    main()
