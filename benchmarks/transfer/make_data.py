"""Fashion-MNIST with 1,000 labels: a folder dataset for the transfer benchmark.

1,000 images drawn (seed 0) from the official training set are the only labelled images a run
sees: `effnet train` holds out 10% of them (100) for model selection and trains on 900. The
official 10,000-image test set is `test/`, touched only by the final `effnet eval --split test`.
(The built-in `--data fashion-mnist --limit-train 1000` would select on 6,000 more labelled
validation images, which a user with 1,000 labels does not have.)

    python benchmarks/transfer/make_data.py --out /tmp/fmnist-1k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from effnet.datasets.builtin import FASHION_MNIST_CLASSES, fashion_mnist


def write(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / FASHION_MNIST_CLASSES[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{i:05d}.png")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    splits, _ = fashion_mnist()
    train, test = splits["train"], splits["test"]
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(train.labels))[: args.labels])
    write(args.out / "train", train.images[pick], train.labels[pick])
    write(args.out / "test", test.images, test.labels)
    counts = np.bincount(train.labels[pick], minlength=len(FASHION_MNIST_CLASSES))
    print(f"{args.out}: {args.labels} labelled training images (per class {counts.tolist()}), "
          f"{len(test.labels)} test images")  # fmt: skip


if __name__ == "__main__":
    main()
