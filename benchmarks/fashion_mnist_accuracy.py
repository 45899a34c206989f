"""Accuracy on real data: train a compound-scaled B0 from scratch on Fashion-MNIST on this CPU,
then evaluate on the official 10k test set. Writes the run to runs/ and the summary to
benchmarks/fashion_mnist_accuracy.json.

    python benchmarks/fashion_mnist_accuracy.py            # the committed configuration
    python benchmarks/fashion_mnist_accuracy.py --epochs 2 --limit-train 8000   # a quick look

Options it does not know go to ``effnet train`` as they are (progressive learning, for one:
``--progressive 4 --start-size 32``); the summary names the plots after itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from effnet.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phi", default="-3")
    parser.add_argument("--image-size", default="64")
    parser.add_argument("--epochs", default="16")
    parser.add_argument("--lr", default="0.004")
    parser.add_argument("--weight-decay", default="0.01")
    parser.add_argument("--drop-path-rate", default="0")
    parser.add_argument("--limit-train", default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "fmnist-benchmark"))
    parser.add_argument("--summary", default=str(ROOT / "benchmarks" / "fashion_mnist_accuracy.json"))
    args, extra = parser.parse_known_args()

    train = [
        sys.executable, "-m", "effnet", "train", "--phi", args.phi, "--data", "fashion-mnist",
        "--image-size", args.image_size, "--epochs", args.epochs, "--batch-size", "64", "--seed", "0",
        "--opt", "adamw", "--lr", args.lr, "--weight-decay", args.weight_decay, "--sched", "cosine",
        "--augment", "light", "--ema-decay", "0.999", "--bn-momentum", "0.1", "--drop-path-rate", args.drop_path_rate,
        "--channels-last", "--checkpoint-every", "200", "--out", args.out, *extra,
    ]  # fmt: skip
    if args.limit_train:
        train += ["--limit-train", args.limit_train]
    if (Path(args.out) / "config.json").exists():
        train.append("--resume")  # the run survives interruptions: start it again to continue
    start = time.perf_counter()
    subprocess.run(train, check=True)
    wall = time.perf_counter() - start
    evaluate = [sys.executable, "-m", "effnet", "eval", "--weights", f"{args.out}/best.safetensors",
                "--split", "test", "--json", "--plot", f"{args.out}/confusion.png"]  # fmt: skip
    result = json.loads(subprocess.run(evaluate, check=True, capture_output=True, text=True).stdout)
    rows = (Path(args.out) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    column = {name: [r.split(",")[header.index(name)] for r in rows[1:]] for name in header}
    summary = {
        "command": " ".join(["python", "benchmarks/fashion_mnist_accuracy.py", *sys.argv[1:]]),
        "train_command": " ".join(train[1:]),
        "machine": machine(),
        "test_top1": result["top1"],
        "test_top5": result["top5"],
        "test_n": result["n"],
        "per_class": result["per_class"],
        "wall_seconds_this_invocation": round(wall, 1),
        "train_images_per_second_last_epoch": float(last["images_per_second"]),
        "epochs": int(last["epoch"]),
        "val_top1_by_epoch": [float(r.split(",")[header.index("val_top1")]) for r in rows[1:]],
        "epoch_seconds": [float(r.split(",")[header.index("epoch_seconds")]) for r in rows[1:]],
        "train_seconds": round(sum(float(v) for v in column["epoch_seconds"]), 1),
        **({"image_size_by_epoch": [int(v) for v in column["image_size"]],
            "dropout_by_epoch": [float(v) for v in column["dropout"]],
            "randaug_by_epoch": [int(v) if v else None for v in column["randaug"]]} if "image_size" in column else {}),
    }  # fmt: skip
    # Paths relative to the repository: the results must not name this machine's folders.
    Path(args.summary).write_text(json.dumps(summary, indent=2).replace(f"{ROOT}/", "") + "\n")
    # runs/ is not committed: keep the plots beside the summary so they outlive the run directory
    stem = Path(args.summary).stem.removesuffix("_accuracy")
    for name in ("curves.png", "confusion.png"):
        shutil.copyfile(Path(args.out) / name, Path(args.summary).parent / f"{stem}_{name}")
    print(json.dumps({k: summary[k] for k in ("test_top1", "wall_seconds_this_invocation", "epochs")}, indent=2))


if __name__ == "__main__":
    main()
