"""Datasets that need no set-up: Fashion-MNIST from Debian's package, scikit-learn's digits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet.core.errors import UsageError
from effnet.datasets.idx import read_idx

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ArraySplit:
    """Images as uint8 (N, H, W) or (N, H, W, C), labels as int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ArraySplit:
        return ArraySplit(self.images[index], self.labels[index])


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[dict[str, ArraySplit], list[str]]:
    """The official 60k/10k Fashion-MNIST splits, read from the IDX files."""
    directory = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    splits = {}
    for split, (images_stem, labels_stem) in _FMNIST_FILES.items():
        images, labels = _find(directory, images_stem), _find(directory, labels_stem)
        if images is None or labels is None:
            raise UsageError(
                f"Fashion-MNIST not found in {directory} (need {images_stem}[.gz] and {labels_stem}[.gz]). "
                "On Debian: apt-get install dataset-fashion-mnist (puts them in /usr/share/datasets/fashion-mnist), "
                "or pass --data-dir to where the IDX files are."
            )
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UsageError(f"{images}: {x.shape} images do not pair with {labels}: {y.shape} labels")
        # np.frombuffer views are read-only, which torch.from_numpy warns about: own a copy
        splits[split] = ArraySplit(np.array(x, order="C"), y.astype(np.int64))
    return splits, list(FASHION_MNIST_CLASSES)


def digits() -> tuple[dict[str, ArraySplit], list[str]]:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0-16), scaled to 0-255.

    There is no official test split; a fixed, seeded 20% is held out as "test".
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(20_190_528).permutation(len(labels))
    n_test = len(labels) // 5
    full = ArraySplit(images, labels)
    return {"train": full.subset(np.sort(order[n_test:])), "test": full.subset(np.sort(order[:n_test]))}, [
        str(i) for i in range(10)
    ]
