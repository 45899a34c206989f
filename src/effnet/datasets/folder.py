"""Image folders: ``root/<class>/<image>``, the layout torchvision's ImageFolder reads."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from effnet.core.errors import UsageError

# Files with these suffixes are taken as images; anything else in a class folder is reported
# by `effnet data check` rather than silently skipped.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class FileSplit:
    """(path, class index) pairs, sorted by path so the order is the same on every machine."""

    samples: list[tuple[str, int]]

    def __len__(self) -> int:
        return len(self.samples)


def scan_classes(root: str | os.PathLike) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    return classes


def scan_files(root: str | os.PathLike, classes: list[str]) -> FileSplit:
    """Every file under ``root/<class>/``. An empty class folder is an error: skipping it would
    silently shift every later class index."""
    root = Path(root)
    samples = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise UsageError(f"{folder}: class folder missing (classes come from the training tree: {classes})")
        files = sorted(
            str(p)
            for p in folder.rglob("*")
            if p.is_file() and p.name not in IGNORED_NAMES and not p.name.startswith(".")
        )
        if not files:
            raise UsageError(f"{folder}: empty class folder; remove it or add images (class indices depend on it)")
        samples.extend((f, index) for f in files)
    return FileSplit(samples)


def stable_split(split: FileSplit, fraction: float, seed: int, root: str | os.PathLike) -> tuple[FileSplit, FileSplit]:
    """Hold out ``fraction`` of each class by a hash of (seed, relative path).

    A file's side depends only on its own name, so adding or removing other files never moves it
    between train and validation.
    """
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-split must be in (0, 1), got {fraction}")
    train, val = [], []
    for path, label in split.samples:
        key = f"{seed}:{os.path.relpath(path, root)}".encode()
        bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        (val if bucket < fraction else train).append((path, label))
    if not train or not val:
        raise UsageError(f"--val-split {fraction} leaves an empty split out of {len(split)} images")
    return FileSplit(train), FileSplit(val)
