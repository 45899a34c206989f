"""Issue 27: does bf16 training (autocast, depthwise convolutions in fp32) reach fp32's accuracy?
The same short Fashion-MNIST run of B0 at 64 px in each precision, one after the other in one
invocation (nothing else running), each evaluated on the official 10,000 test images.

    python benchmarks/precision/accuracy.py --out benchmarks/precision/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from effnet.core.machine import write_report

TRAIN = ["--model", "efficientnet_b0", "--data", "fashion-mnist", "--image-size", "64", "--batch-size", "64",
         "--limit-train", "12000", "--epochs", "3", "--seed", "0", "--quiet", "--json"]  # fmt: skip


def effnet(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "effnet", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for precision in args.precisions.split(","):
            run = Path(scratch) / precision
            row = effnet("train", *TRAIN, "--precision", precision, "--out", str(run))
            test = effnet("eval", "--weights", str(run / "best.safetensors"), "--split", "test", "--json")
            runtime = json.loads((run / "runtime.json").read_text())
            runs[precision] = {"test_top1": test["top1"], "val_top1": row["val_top1"],
                               "images_per_second_last_epoch": row["images_per_second"],
                               "precision_used": runtime["precision"], "pipeline": runtime["pipeline"]}  # fmt: skip
            print(precision, runs[precision], file=sys.stderr, flush=True)
    first = args.precisions.split(",")[0]
    for r in runs.values():
        r[f"test_top1_minus_{first}_points"] = round(100 * (r["test_top1"] - runs[first]["test_top1"]), 2)
        r[f"speed_vs_{first}"] = round(r["images_per_second_last_epoch"] / runs[first]["images_per_second_last_epoch"],
                                       3)  # fmt: skip
    out = {"train": " ".join(TRAIN), "runs": runs}
    write_report(out, args.out)


if __name__ == "__main__":
    main()
