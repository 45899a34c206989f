"""FMNIST-Det and FMNIST-Seg: real Fashion-MNIST items pasted onto 128x128 canvases.

No installed package ships a detection or segmentation dataset, so one is built from real images,
reproducibly: 1-5 items per canvas, each resized to 20-56 px, placed so that no two placement
squares overlap by more than IoU 0.2. Boxes and masks come from each item's own *visible* pixels
(a later item hides what it covers). Category ids are 1-10 (the Fashion-MNIST classes); 0 is the
background. Train canvases use training items, validation canvases the held-out training items,
test canvases only the official test items and a fixed seed, so every run is measured on the same
2,000 test canvases.

The texture variant pastes the items onto crops of scikit-image's brick, grass and gravel and of
scikit-learn's two sample photos, where a global threshold no longer separates item from
background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from effnet.core.errors import UsageError
from effnet.datasets.builtin import fashion_mnist

CANVAS = 128
ITEM_SIZES = (20, 56)  # inclusive side range of a pasted item, pixels
ITEMS_PER_CANVAS = (1, 5)
MAX_IOU = 0.2
ITEM_THRESHOLD = 16  # an item pixel is "on" above this grey value (Fashion-MNIST's background is 0)
VAL_ITEMS = 6000  # training items held out for validation canvases
TEST_SEED = 20_260_101  # the test canvases never depend on --seed
BACKGROUNDS = ("plain", "texture")
SPLIT_SEEDS = {"train": 0, "val": 1}


@dataclass
class Canvas:
    image: np.ndarray  # (128, 128, 3) uint8
    mask: np.ndarray  # (128, 128) uint8, 0 = background, k = category k
    boxes: list[tuple[int, int, int, int]]  # x0, y0, x1, y1 (exclusive) of the visible pixels
    labels: list[int]  # category ids 1-10
    areas: list[int]  # visible pixels of each item


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _textures() -> list[np.ndarray]:
    """RGB uint8 sources for the texture backgrounds (all shipped inside the packages)."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise UsageError(
            "--background texture needs scikit-image and scikit-learn: pip install 'effnet[tasks]'"
        ) from None
    grey = [skimage.data.brick(), skimage.data.grass(), skimage.data.gravel()]
    return [np.stack([g] * 3, axis=-1) for g in grey] + list(load_sample_images().images)


class CanvasMaker:
    """Draws canvases from a pool of 28x28 items; the same generator state gives the same canvas."""

    def __init__(self, items: np.ndarray, labels: np.ndarray, background: str):
        if background not in BACKGROUNDS:
            raise UsageError(f"--background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
        self.items, self.labels = items, labels
        self.textures = _textures() if background == "texture" else None

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        if self.textures is None:
            return np.zeros((CANVAS, CANVAS, 3), np.uint8)
        source = self.textures[rng.integers(len(self.textures))]
        y = rng.integers(source.shape[0] - CANVAS + 1)
        x = rng.integers(source.shape[1] - CANVAS + 1)
        return source[y : y + CANVAS, x : x + CANVAS].copy()

    def _placements(self, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
        wanted = int(rng.integers(ITEMS_PER_CANVAS[0], ITEMS_PER_CANVAS[1] + 1))
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(50 * wanted):  # rejection sampling; a crowded canvas keeps fewer items
            if len(placed) == wanted:
                break
            side = int(rng.integers(ITEM_SIZES[0], ITEM_SIZES[1] + 1))
            x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
            square = (x, y, x + side, y + side)
            if all(_iou(square, other) <= MAX_IOU for other in placed):
                placed.append(square)
        return placed

    def make(self, rng: np.random.Generator) -> Canvas:
        image = self._background(rng)
        owner = np.zeros((CANVAS, CANVAS), np.int16)  # which pasted item each pixel shows (0: none)
        labels = []
        for k, (x0, y0, x1, y1) in enumerate(self._placements(rng), start=1):
            index = int(rng.integers(len(self.items)))
            item = np.asarray(Image.fromarray(self.items[index]).resize((x1 - x0, y1 - y0), Image.BILINEAR))
            on = item > ITEM_THRESHOLD
            image[y0:y1, x0:x1][on] = item[on][:, None]
            owner[y0:y1, x0:x1][on] = k
            labels.append(int(self.labels[index]) + 1)
        mask = np.zeros((CANVAS, CANVAS), np.uint8)
        boxes, kept, areas = [], [], []
        for k, label in enumerate(labels, start=1):
            ys, xs = np.nonzero(owner == k)
            if len(xs) == 0:
                continue  # fully hidden by later items
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
            kept.append(label)
            areas.append(len(xs))
            mask[owner == k] = label
        return Canvas(image, mask, boxes, kept, areas)


def item_pools(data_dir=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Items per split: train and val from Fashion-MNIST's training set (a fixed held-out part for
    val), test from its official test set only."""
    splits, _ = fashion_mnist(data_dir)
    train = splits["train"]
    order = np.random.default_rng(TEST_SEED).permutation(len(train))
    val_idx, train_idx = np.sort(order[:VAL_ITEMS]), np.sort(order[VAL_ITEMS:])
    return {
        "train": (train.images[train_idx], train.labels[train_idx]),
        "val": (train.images[val_idx], train.labels[val_idx]),
        "test": (splits["test"].images, splits["test"].labels),
    }


def split_rng(split: str, seed: int) -> np.random.Generator:
    if split == "test":
        return np.random.default_rng(TEST_SEED)
    return np.random.default_rng([seed, SPLIT_SEEDS[split]])


def make_canvases(split: str, count: int, *, background: str = "plain", seed: int = 0, data_dir=None):
    """``count`` canvases of ``split``, in order; the test split ignores ``seed``."""
    items, labels = item_pools(data_dir)[split]
    maker, rng = CanvasMaker(items, labels, background), split_rng(split, seed)
    return [maker.make(rng) for _ in range(count)]
