"""``effnet data make``: write a generated dataset into a new folder, all or nothing.

Every maker writes into a temporary sibling of ``--out`` and renames it at the end, so an error
or Ctrl-C leaves nothing behind; the same arguments give the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from effnet.core.errors import UsageError
from effnet.datasets.builtin import FASHION_MNIST_CLASSES
from effnet.datasets.canvases import CANVAS, CanvasMaker, item_pools, split_rng

DEFAULT_COUNTS = {"train": 10_000, "val": 1_000, "test": 2_000}
FMNIST_KINDS = ("fmnist-det", "fmnist-seg")


def png_bytes(array: np.ndarray) -> bytes:
    """PNG without time stamps or other varying chunks: the same array gives the same bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def new_output(out: str | os.PathLike) -> Path:
    """``out`` must not exist yet or be an empty folder: a maker never mixes into other files."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty folder; choose a new one")
    if not out.parent.exists():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    return out


def publish(out: Path, write) -> Path:
    """Run ``write(tmp_dir)`` and move the result to ``out`` only when it finished."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            out.rmdir()  # empty, checked by new_output
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def category_list() -> list[dict]:
    return [{"id": i + 1, "name": name} for i, name in enumerate(FASHION_MNIST_CLASSES)]


def segmentation_classes() -> list[str]:
    return ["background", *FASHION_MNIST_CLASSES]


def make_fmnist(
    kind: str,
    out: str | os.PathLike,
    *,
    background: str = "plain",
    seed: int = 0,
    counts: dict[str, int] | None = None,
    data_dir=None,
    progress: bool = False,
) -> Path:
    """FMNIST-Det (images + COCO ``annotations.json``) or FMNIST-Seg (images + PNG ``masks/`` +
    ``classes.json``) with ``train/``, ``val/`` and ``test/`` inside ``out``."""
    if kind not in FMNIST_KINDS:
        raise UsageError(f"unknown dataset {kind!r}; choose one of {', '.join(FMNIST_KINDS)}")
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    for split, n in counts.items():
        if n < 1:
            raise UsageError(f"--{split} must be at least 1, got {n}")
    out = new_output(out)
    pools = item_pools(data_dir)
    makers = {split: CanvasMaker(*pools[split], background) for split in counts}

    def write(root: Path) -> None:
        bar = tqdm(total=sum(counts.values()), desc=f"{kind} ({background})", unit="canvas", disable=not progress)
        for split, n in counts.items():
            folder = root / split
            (folder / "images").mkdir(parents=True)
            if kind == "fmnist-seg":
                (folder / "masks").mkdir()
                (folder / "classes.json").write_text(json.dumps(segmentation_classes(), indent=1) + "\n")
            rng = split_rng(split, seed)
            images, annotations = [], []
            for i in range(n):
                canvas = makers[split].make(rng)
                name = f"{i:06d}.png"
                (folder / "images" / name).write_bytes(png_bytes(canvas.image))
                if kind == "fmnist-seg":
                    (folder / "masks" / name).write_bytes(png_bytes(canvas.mask))
                images.append({"id": i + 1, "file_name": name, "width": CANVAS, "height": CANVAS})
                for (x0, y0, x1, y1), label, area in zip(canvas.boxes, canvas.labels, canvas.areas, strict=True):
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area, "iscrowd": 0})  # fmt: skip
                bar.update(1)
            if kind == "fmnist-det":
                coco = {"images": images, "annotations": annotations, "categories": category_list()}
                (folder / "annotations.json").write_text(json.dumps(coco) + "\n")
        bar.close()
        info = {"dataset": kind, "background": background, "seed": seed, "counts": counts}
        (root / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")

    return publish(out, write)
