"""Training data: Fashion-MNIST, scikit-learn digits, or an image-folder tree.

``load_data`` returns the splits (train, val, test) as lists of images or files plus the class
names; ``ImageDataset`` turns a split into a torch Dataset with a transform.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import UsageError
from effnet.datasets.builtin import ArraySplit, digits, fashion_mnist
from effnet.datasets.check import check_files
from effnet.datasets.choices import BAD_IMAGE_POLICIES, BUILTIN
from effnet.datasets.folder import FileSplit, scan_classes, scan_files, stable_split
from effnet.datasets.images import load_rgb


@dataclass
class Data:
    name: str
    classes: list[str]
    splits: dict[str, ArraySplit | FileSplit]  # "train", "val" and, where there is one, "test"
    skipped: list[dict] = field(default_factory=list)  # bad files left out with --bad-images skip

    def split(self, name: str) -> ArraySplit | FileSplit:
        if name not in self.splits:
            raise UsageError(f"{self.name} has no {name!r} split; available: {', '.join(self.splits)}")
        return self.splits[name]


class ImageDataset(torch.utils.data.Dataset):
    """Yields (transformed image, label). Arrays become 1-channel uint8 tensors, files RGB PIL
    images; the transform makes both 3-channel floats."""

    def __init__(self, split: ArraySplit | FileSplit, transform=None):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        if isinstance(self.split, ArraySplit):
            image = torch.from_numpy(self.split.images[index])
            image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
            label = int(self.split.labels[index])
        else:
            path, label = self.split.samples[index]
            image = load_rgb(path)
        return (self.transform(image) if self.transform else image), label


def ordered_loader(dataset, batch_size: int, workers: int = 0, collate_fn=None) -> torch.utils.data.DataLoader:
    """The dataset in index order, for evaluation, calibration and caches. With its own generator:
    a DataLoader without one draws a seed from the global RNG, which would shift the random stream
    (dropout, stochastic depth) of a training run that validates between epochs."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, generator=torch.Generator(), collate_fn=collate_fn
    )


def _holdout(split: ArraySplit, fraction: float, seed: int) -> tuple[ArraySplit, ArraySplit]:
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-split must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(split))
    n_val = max(1, int(round(len(split) * fraction)))
    return split.subset(np.sort(order[n_val:])), split.subset(np.sort(order[:n_val]))


def _limit(split, limit: int | None, seed: int):
    if limit is None or limit >= len(split):
        return split
    if limit < 1:
        raise UsageError(f"--limit-train must be at least 1, got {limit}")
    order = np.sort(np.random.default_rng(seed + 1).permutation(len(split))[:limit])
    if isinstance(split, ArraySplit):
        return split.subset(order)
    return FileSplit([split.samples[i] for i in order])


def _verify(splits: dict[str, FileSplit], policy: str, progress: bool) -> tuple[dict[str, FileSplit], list[dict]]:
    """Decode every file of every split once; stop on the first bad one or leave them all out."""
    paths = sorted({p for split in splits.values() for p, _ in split.samples})
    report = check_files(paths, progress=progress)
    if report.bad and policy == "error":
        first = report.bad[0]
        more = f" ({len(report.bad) - 1} more; `effnet data check` lists them)" if len(report.bad) > 1 else ""
        raise UsageError(f"{first['path']}: {first['reason']}{more}. Use --bad-images skip to train without them.")
    good = set(report.good)
    return {name: FileSplit([s for s in split.samples if s[0] in good]) for name, split in splits.items()}, report.bad


def load_data(
    data: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_split: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
    bad_images: str = "error",
    verify: bool = True,
    progress: bool = False,
) -> Data:
    """``data`` is ``fashion-mnist``, ``digits`` or a folder (``train/`` and ``val/`` inside,
    or one class tree split by ``val_split``). Builtin datasets keep their test split and hold
    out ``val_split`` of train, seeded, for model selection."""
    if bad_images not in BAD_IMAGE_POLICIES:
        raise UsageError(f"--bad-images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
    if data in BUILTIN:
        splits, classes = fashion_mnist(data_dir) if data == "fashion-mnist" else digits()
        train, val = _holdout(splits["train"], val_split, seed)
        return Data(data, classes, {"train": _limit(train, limit_train, seed), "val": val, "test": splits["test"]})

    root = Path(data)
    if not root.exists():
        raise UsageError(f"--data {data}: no such directory, and not one of {', '.join(BUILTIN)}")
    if (root / "train").is_dir():
        classes = scan_classes(root / "train")
        splits = {"train": scan_files(root / "train", classes)}
        for name in ("val", "test"):
            if (root / name).is_dir():
                extra = scan_classes(root / name)
                if extra != classes:
                    raise UsageError(f"{root / name}: classes {extra} differ from {root / 'train'}: {classes}")
                splits[name] = scan_files(root / name, classes)
        if "val" not in splits:
            splits["train"], splits["val"] = stable_split(splits["train"], val_split, seed, root / "train")
    else:
        classes = scan_classes(root)
        splits = dict(
            zip(("train", "val"), stable_split(scan_files(root, classes), val_split, seed, root), strict=True)
        )
    splits["train"] = _limit(splits["train"], limit_train, seed)
    skipped = []
    if verify:
        splits, skipped = _verify(splits, bad_images, progress)
    return Data(str(root), classes, splits, skipped)
