"""Segmentation data: ``images/`` and ``masks/`` with the same file stems, and ``classes.json``
(a list of class names; the mask value k is class k, 0 the background, 255 "ignore"). The layout
``effnet data make fmnist-seg`` and ``effnet data make nuclei`` write; with ``train/``, ``val/``
(and ``test/``) folders that each hold one, or one folder split by ``val_split``. Every mask is
read once when the data is opened: a mask whose size differs from its image or with a value
outside the classes stops the run with one line naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from effnet.core.errors import UsageError
from effnet.datasets.coco import SPLIT_NAMES, holdout
from effnet.datasets.images import load_rgb

CLASSES_FILE = "classes.json"
IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class MaskSplit:
    images: list[Path]
    masks: list[Path]
    sizes: list[tuple[int, int]]  # (width, height)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> MaskSplit:
        pick = [int(i) for i in index]
        return MaskSplit([self.images[i] for i in pick], [self.masks[i] for i in pick], [self.sizes[i] for i in pick])


@dataclass
class MaskData:
    name: str
    classes: list[str]  # classes[0] is the background
    splits: dict[str, MaskSplit]
    skipped: tuple = ()

    def split(self, name: str) -> MaskSplit:
        if name not in self.splits:
            raise UsageError(f"{self.name} has no {name!r} split; available: {', '.join(self.splits)}")
        return self.splits[name]


def read_classes(path: Path) -> list[str]:
    try:
        classes = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON list of class names ({exc})") from None
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes) and 2 <= len(classes) < IGNORE):
        raise UsageError(f"{path}: must be a JSON list of 2-254 class names, background first")
    return classes


def read_split(folder: Path, num_classes: int) -> MaskSplit:
    """Pairs of image and mask files in ``folder``, every mask checked against its image."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise UsageError(f"{folder}: has no {d.name}/ folder (segmentation needs images/ and masks/)")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    images, paired, sizes = [], [], []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = masks.get(image.stem)
        if mask is None:
            raise UsageError(f"{image}: no mask {masks_dir / image.stem}.png for it")
        try:
            with Image.open(image) as im:
                size = im.size
            with Image.open(mask) as m:
                values = np.asarray(m)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{image.name} / {mask}: not readable ({exc})") from None
        if values.ndim != 2:
            raise UsageError(f"{mask}: a mask must have one channel of class indices, got shape {values.shape}")
        if values.shape[::-1] != size:
            raise UsageError(f"{mask}: is {values.shape[1]}x{values.shape[0]} but {image} is {size[0]}x{size[1]}")
        bad = np.unique(values[(values >= num_classes) & (values != IGNORE)])
        if len(bad):
            raise UsageError(f"{mask}: values {bad[:5].tolist()} are outside the {num_classes} classes (0-"
                             f"{num_classes - 1}, {IGNORE} = ignore)")  # fmt: skip
        images.append(image)
        paired.append(mask)
        sizes.append(size)
    if not images:
        raise UsageError(f"{images_dir}: no images")
    return MaskSplit(images, paired, sizes)


def load_masks(data: str | os.PathLike, *, val_split: float = 0.1, seed: int = 0, limit_train=None) -> MaskData:
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"--data {data}: no such directory (segmentation needs images/, masks/, {CLASSES_FILE})")
    found = [name for name in SPLIT_NAMES if (root / name / "images").is_dir()]
    folders = {name: root / name for name in found} if found else {"train": root}
    if "train" not in folders:
        raise UsageError(f"--data {data}: has {', '.join(found)} but no train/")
    classes = None
    for folder in (folders["train"], root):
        if (folder / CLASSES_FILE).is_file():
            classes = read_classes(folder / CLASSES_FILE)
            break
    if classes is None:
        raise UsageError(f"--data {data}: no {CLASSES_FILE} (a list of class names, background first)")
    for name, folder in folders.items():
        own = folder / CLASSES_FILE
        if name != "train" and own.is_file() and read_classes(own) != classes:
            raise UsageError(f"{own}: its classes differ from the training split's")
    splits = {name: read_split(folder, len(classes)) for name, folder in folders.items()}
    if "val" not in splits:
        splits["train"], splits["val"] = holdout(splits["train"], val_split, seed)
    if limit_train is not None and limit_train < len(splits["train"]):
        order = np.sort(np.random.default_rng(seed + 1).permutation(len(splits["train"]))[: max(1, limit_train)])
        splits["train"] = splits["train"].subset(order)
    return MaskData(str(root), classes, splits)


class MaskDataset(torch.utils.data.Dataset):
    """(normalised image, mask as int64 HxW). ``augment`` adds seeded flips and 90-degree turns
    (applied to image and mask alike by transforms v2); ``size`` resizes both (mask: nearest)."""

    def __init__(self, split: MaskSplit, mean, std, augment: bool = False, size: int | None = None):
        self.split = split
        steps = [v2.Resize((size, size))] if size else []
        if augment:
            turns = [v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomChoice(turns)]
        to_float = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
        self.transform = v2.Compose([v2.ToImage(), *steps, to_float, v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image = load_rgb(self.split.images[index])
        with Image.open(self.split.masks[index]) as m:
            mask = tv_tensors.Mask(torch.from_numpy(np.asarray(m, dtype=np.int64).copy()))
        image, mask = self.transform(image, mask)
        return image, mask.as_subclass(torch.Tensor)
