"""The short recipe's defaults, measured as a user runs them: `effnet train` with only --model (or
--phi), --data, --image-size and --epochs, then `effnet eval` of best.safetensors on the test
split; wall times of both commands and the CPU flags beside them. Usage:

    python benchmarks/short_recipe.py --work /tmp/short --out benchmarks/short_recipe.json [--fashion-mnist]

--fashion-mnist adds the 8,000-image Fashion-MNIST run (~9 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tasks"))
from common import timed  # noqa: E402 - the task benchmarks' runner of effnet commands

from effnet.core.machine import machine  # noqa: E402

RUNS = {
    "b0_digits": ["--model", "efficientnet_b0", "--data", "digits", "--epochs", "2", "--image-size", "32"],
    "phi-3_digits": ["--phi", "-3", "--data", "digits", "--epochs", "2", "--image-size", "32"],
}
FMNIST = ["--model", "efficientnet_b0", "--data", "fashion-mnist", "--limit-train", "8000", "--epochs", "2",
          "--image-size", "64"]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fashion-mnist", action="store_true")
    args = p.parse_args()
    runs = dict(RUNS, **({"b0_fashion_mnist": FMNIST} if args.fashion_mnist else {}))
    results = {}
    for name, options in runs.items():
        run = args.work / name
        start = time.perf_counter()
        row, train_s = timed("train", *options, "--out", run, "--json", "--quiet")
        evaluated, eval_s = timed("eval", "--weights", run / "best.safetensors", "--split", "test", "--json")
        results[name] = {
            "command": "effnet train " + " ".join(options) + " --out RUN",
            "steps": row["step"],
            "test_top1": evaluated["top1"],
            "test_images": evaluated["n"],
            "train_seconds": round(train_s, 1),
            "eval_seconds": round(eval_s, 1),
            "wall_seconds": round(time.perf_counter() - start, 1),
        }
        print(name, json.dumps(results[name]), file=sys.stderr)
    # the effnet commands run in processes of their own, on the threads OMP_NUM_THREADS gives them
    out = {"machine": {**machine(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}, "runs": results}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
