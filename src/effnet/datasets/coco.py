"""Detection data in COCO's layout: a folder with ``images/`` and ``annotations.json`` (the
layout ``effnet data make fmnist-det`` writes), or ``train/``, ``val/`` (and ``test/``) folders
that each hold one. Everything is checked when the data is opened, so a bad box stops the run
before training with one line naming the file, the annotation and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from effnet.core.errors import EffnetWarning, UsageError
from effnet.datasets.images import load_rgb

ANNOTATIONS = "annotations.json"
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class DetectionSplit:
    folder: Path  # where file_name is relative to
    files: list[str]
    sizes: list[tuple[int, int]]  # (width, height)
    boxes: list[np.ndarray]  # (n, 4) float32, x0 y0 x1 y1 in pixels
    labels: list[np.ndarray]  # (n,) int64, 1..K (contiguous; 0 is the background)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, index) -> DetectionSplit:
        pick = [int(i) for i in index]
        return DetectionSplit(self.folder, *([values[i] for i in pick] for values in
                                             (self.files, self.sizes, self.boxes, self.labels)))  # fmt: skip


@dataclass
class DetectionData:
    name: str
    classes: list[str]  # object classes, label k is classes[k - 1]
    category_ids: list[int]  # COCO category id of each class, in the same order
    splits: dict[str, DetectionSplit]
    skipped: list[dict] = field(default_factory=list)

    def split(self, name: str) -> DetectionSplit:
        if name not in self.splits:
            raise UsageError(f"{self.name} has no {name!r} split; available: {', '.join(self.splits)}")
        return self.splits[name]


def _field(entry, key, kind, where):
    if not isinstance(entry, dict) or key not in entry:
        raise UsageError(f"{where}: missing {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UsageError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def read_coco(path: Path, categories: list[dict] | None = None) -> tuple[DetectionSplit, list[dict]]:
    """One COCO file, checked: every image file exists and has the size it claims, every box lies
    inside its image with a positive area, every category id is declared, every image file lies
    inside the images folder. A file without a single box is refused; images without boxes
    (background images) are counted in a warning."""
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable COCO JSON file ({exc})") from None
    except RecursionError:  # json's parser recurses once per nesting level
        raise UsageError(f"{path}: not a COCO file (its JSON is nested too deeply to read)") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):  # fmt: skip
        raise UsageError(f"{path}: a COCO file needs the lists 'images', 'annotations' and 'categories'")
    cats = [
        {
            "id": _field(c, "id", int, f"{path}: category {i}"),
            "name": str(_field(c, "name", str, f"{path}: category {i}")),
        }
        for i, c in enumerate(coco["categories"])
    ]
    if not cats:
        raise UsageError(f"{path}: declares no categories")
    cats.sort(key=lambda c: c["id"])
    if categories is not None and cats != categories:
        raise UsageError(f"{path}: its categories differ from the training split's")
    label_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
    if len(label_of) != len(cats):
        raise UsageError(f"{path}: category ids repeat")

    folder = path.parent / "images"
    index, files, sizes = {}, [], []
    for i, entry in enumerate(coco["images"]):
        where = f"{path}: image {i}"
        image_id = _field(entry, "id", int, where)
        name = _field(entry, "file_name", str, where)
        width, height = _field(entry, "width", int, where), _field(entry, "height", int, where)
        if image_id in index:
            raise UsageError(f"{where}: image id {image_id} repeats")
        inside = os.path.normpath(name)
        if os.path.isabs(inside) or inside == os.pardir or inside.startswith(os.pardir + os.sep):
            raise UsageError(f"{path}: image id {image_id}: file_name {name!r} points outside {folder} "
                             "(file names are relative to the images folder)")  # fmt: skip
        file = folder / name
        if not file.is_file():
            raise UsageError(f"{path}: image id {image_id}: {file} does not exist")
        try:
            with Image.open(file) as im:
                actual = im.size
        except (OSError, ValueError) as exc:
            raise UsageError(f"{file}: not a readable image ({exc})") from None
        if actual != (width, height):
            raise UsageError(f"{path}: image id {image_id}: {file} is {actual[0]}x{actual[1]}, not {width}x{height}")
        index[image_id] = len(files)
        files.append(name)
        sizes.append((width, height))

    boxes = [[] for _ in files]
    labels = [[] for _ in files]
    for i, ann in enumerate(coco["annotations"]):
        where = f"{path}: annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
        image_id = _field(ann, "image_id", int, where)
        category = _field(ann, "category_id", int, where)
        bbox = ann.get("bbox")
        if image_id not in index:
            raise UsageError(f"{where}: unknown image id {image_id}")
        if category not in label_of:
            raise UsageError(f"{where}: unknown category id {category} (declared: {sorted(label_of)})")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise UsageError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        image = f"image id {image_id} ({files[index[image_id]]})"
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise UsageError(f"{where}: box {bbox} in {image} is not finite (NaN or infinity)")
        if w < 0 or h < 0:
            raise UsageError(f"{where}: box {bbox} in {image} has a negative width or height")
        if ann.get("iscrowd", 0):
            continue  # crowd regions are neither targets nor false positives in training
        width, height = sizes[index[image_id]]
        if not (w > 0 and h > 0):
            raise UsageError(f"{where}: zero-area box {bbox} in image id {image_id}")
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise UsageError(f"{where}: box {bbox} lies outside the {width}x{height} image id {image_id}")
        boxes[index[image_id]].append((x, y, x + w, y + h))
        labels[index[image_id]].append(label_of[category])
    empty = sum(not b for b in boxes)
    if files and empty == len(files):
        raise UsageError(f"{path}: holds no boxes to learn from ({len(coco['annotations'])} annotations, "
                         f"{len(files)} images; crowd regions do not count)")  # fmt: skip
    if empty:
        warnings.warn(f"{path}: {empty} of {len(files)} images have no boxes (they train as background only)",
                      EffnetWarning, stacklevel=2)  # fmt: skip
    split = DetectionSplit(
        folder,
        files,
        sizes,
        [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes],
        [np.asarray(v, np.int64) for v in labels],
    )
    return split, cats


def load_detection(
    data: str | os.PathLike,
    *,
    annotations: str = ANNOTATIONS,
    val_split: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
) -> DetectionData:
    """``data`` holds ``images/`` + the annotations file (a seeded ``val_split`` of its images is
    held out) or ``train/`` and ``val/`` (and ``test/``) folders that each do."""
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"--data {data}: no such directory (detection needs images/ and {annotations})")
    found = [name for name in SPLIT_NAMES if (root / name / annotations).is_file()]
    if found:
        if "train" not in found:
            raise UsageError(f"--data {data}: has {', '.join(found)} but no train/{annotations}")
        splits, cats = {}, None
        for name in found:
            splits[name], cats = read_coco(root / name / annotations, cats)
        if "val" not in splits:
            splits["train"], splits["val"] = holdout(splits["train"], val_split, seed)
    elif (root / annotations).is_file():
        whole, cats = read_coco(root / annotations)
        train, val = holdout(whole, val_split, seed)
        splits = {"train": train, "val": val}
    else:
        raise UsageError(f"--data {data}: no {annotations} in it or in train/ (pass --annotations for another name)")
    if limit_train is not None and limit_train < len(splits["train"]):
        if limit_train < 1:
            raise UsageError(f"--limit-train must be at least 1, got {limit_train}")
        order = np.sort(np.random.default_rng(seed + 1).permutation(len(splits["train"]))[:limit_train])
        splits["train"] = splits["train"].subset(order)
    return DetectionData(str(root), [c["name"] for c in cats], [c["id"] for c in cats], splits)


def holdout(split, fraction: float, seed: int):
    """(train, val): a seeded ``fraction`` of the items held out, both in their original order."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-split must be in (0, 1), got {fraction}")
    if len(split) < 2:
        raise UsageError(f"{len(split)} image(s) cannot be split into training and validation")
    order = np.random.default_rng(seed).permutation(len(split))
    n_val = min(len(split) - 1, max(1, int(round(len(split) * fraction))))
    return split.subset(np.sort(order[n_val:])), split.subset(np.sort(order[:n_val]))


class DetectionDataset(torch.utils.data.Dataset):
    """(image as float [0, 1] CHW, {"boxes", "labels"}); ``flip`` adds seeded horizontal flips."""

    def __init__(self, split: DetectionSplit, flip: bool = False):
        self.split = split
        steps = [v2.RandomHorizontalFlip()] if flip else []
        self.transform = v2.Compose([*steps, v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image = load_rgb(self.split.folder / self.split.files[index])
        width, height = self.split.sizes[index]
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(self.split.boxes[index]), format="XYXY",
                                         canvas_size=(height, width))  # fmt: skip
        image, boxes = self.transform(image, boxes)
        return image, {"boxes": boxes.as_subclass(torch.Tensor), "labels": torch.from_numpy(self.split.labels[index])}


def collate_detection(batch):
    """Images stacked when they share a size (a list otherwise); targets as a list of dicts."""
    images, targets = zip(*batch, strict=True)
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images), list(targets)
    return list(images), list(targets)
