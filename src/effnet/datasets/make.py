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
from effnet.datasets.builtin import FASHION_MNIST_CLASSES, fashion_mnist
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


# --- nuclei: the one human-annotated mask reachable offline ----------------------------------

NUCLEI_FILES = ("data/images/img2d.tif", "data/images/mask2d.tif")
NUCLEI_TILE, NUCLEI_STRIDE, NUCLEI_TRAIN_COLUMNS = 128, 64, 384


def stardist_files() -> tuple[Path, Path]:
    """The nuclei image and mask inside the installed stardist wheel, found without importing it
    (stardist's own imports need TensorFlow)."""
    import importlib.util

    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the nuclei image ships in the stardist wheel: pip install --no-deps stardist")
    root = Path(list(spec.submodule_search_locations)[0])
    paths = tuple(root / name for name in NUCLEI_FILES)
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: missing from the installed stardist; reinstall it")
    return paths


def _tiles(height: int, columns: range, stride: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(0, height - NUCLEI_TILE + 1, stride) for x in columns]


def make_nuclei(out: str | os.PathLike) -> Path:
    """The 2018 Data Science Bowl nuclei image (512x512, 125 nuclei, human-annotated) as
    segmentation data: columns 0-383 for training (128 px tiles every 64 px), 384-511 held out
    as the test split (four tiles that cover it exactly). Classes: background, nucleus."""
    try:
        import tifffile
    except ImportError:
        raise UsageError("reading the nuclei TIFFs needs tifffile: pip install 'effnet[tasks]'") from None
    image_path, mask_path = stardist_files()
    image, labels = tifffile.imread(image_path), tifffile.imread(mask_path)
    out = new_output(out)
    # Fluorescence counts to 8 bits by the 1st and 99.8th percentiles, as StarDist normalises.
    low, high = np.percentile(image, (1, 99.8))
    grey = (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    rgb, mask = np.stack([grey] * 3, axis=-1), (labels > 0).astype(np.uint8)
    height = image.shape[0]
    train_cols = range(0, NUCLEI_TRAIN_COLUMNS - NUCLEI_TILE + 1, NUCLEI_STRIDE)
    test_cols = range(NUCLEI_TRAIN_COLUMNS, image.shape[1] - NUCLEI_TILE + 1, NUCLEI_TILE)
    splits = {"train": _tiles(height, train_cols, NUCLEI_STRIDE), "test": _tiles(height, test_cols, NUCLEI_TILE)}

    def write(root: Path) -> None:
        for split, tiles in splits.items():
            folder = root / split
            (folder / "images").mkdir(parents=True)
            (folder / "masks").mkdir()
            (folder / "classes.json").write_text(json.dumps(["background", "nucleus"]) + "\n")
            for y, x in tiles:
                name = f"y{y:03d}_x{x:03d}.png"
                window = np.s_[y : y + NUCLEI_TILE, x : x + NUCLEI_TILE]
                (folder / "images" / name).write_bytes(png_bytes(rgb[window]))
                (folder / "masks" / name).write_bytes(png_bytes(mask[window]))
        info = {"dataset": "nuclei", "source": str(image_path), "nuclei": int(len(np.unique(labels)) - 1),
                "train_columns": [0, NUCLEI_TRAIN_COLUMNS - 1], "test_columns": [NUCLEI_TRAIN_COLUMNS,
                                                                                   image.shape[1] - 1]}  # fmt: skip
        (root / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")

    return publish(out, write)


# --- faces and identities -------------------------------------------------------------------


def make_lfw_faces(out: str | os.PathLike) -> Path:
    """scikit-image's lfw_subset (100 faces, 100 non-faces, 25x25) as a class-folder tree
    ``face/`` and ``non-face/`` for classification."""
    try:
        import skimage.data
    except ImportError:
        raise UsageError("lfw_subset ships in scikit-image: pip install 'effnet[tasks]'") from None
    images = skimage.data.lfw_subset()  # float in [0, 1]; the first 100 are faces
    out = new_output(out)

    def write(root: Path) -> None:
        for i, image in enumerate(images):
            folder = root / ("face" if i < 100 else "non-face")
            folder.mkdir(exist_ok=True)
            (folder / f"{i:03d}.png").write_bytes(png_bytes((image * 255).round().astype(np.uint8)))

    return publish(out, write)


PAIR_FOLDS, PAIRS_PER_FOLD = 10, 300  # LFW's View 2: 10 folds of 300 matched + 300 mismatched pairs


def person_file(name: str, number: int) -> str:
    return f"{name}_{number:04d}.png"


def make_fmnist_pairs(out: str | os.PathLike, *, seed: int = 0, per_class: int | None = None, data_dir=None) -> Path:
    """The labelled proxy for face verification: Fashion-MNIST classes 0-4 as the training
    "people" (``train/people/<name>/``), the unseen classes 5-9 of the official test set as
    ``test/people/<name>/`` with a ``test/pairs.txt`` of 6,000 pairs in LFW's format."""
    splits, classes = fashion_mnist(data_dir)
    names = [c.replace("/", "-").replace(" ", "_") for c in classes]
    out = new_output(out)
    rng = np.random.default_rng(seed)

    def tree(root: Path, split, wanted: range) -> dict[str, int]:
        counts = {}
        for label in wanted:
            index = np.flatnonzero(split.labels == label)[:per_class]
            folder = root / "people" / names[label]
            folder.mkdir(parents=True)
            for number, i in enumerate(index, start=1):
                (folder / person_file(names[label], number)).write_bytes(png_bytes(split.images[i]))
            counts[names[label]] = len(index)
        return counts

    def write(root: Path) -> None:
        tree(root / "train", splits["train"], range(0, 5))
        counts = tree(root / "test", splits["test"], range(5, 10))
        people = sorted(counts)
        lines = [f"{PAIR_FOLDS}\t{PAIRS_PER_FOLD}"]
        for _ in range(PAIR_FOLDS):
            for _ in range(PAIRS_PER_FOLD):
                name = people[rng.integers(len(people))]
                a, b = rng.choice(counts[name], size=2, replace=False) + 1
                lines.append(f"{name}\t{a}\t{b}")
            for _ in range(PAIRS_PER_FOLD):
                first, second = rng.choice(len(people), size=2, replace=False)
                a, b = rng.integers(counts[people[first]]) + 1, rng.integers(counts[people[second]]) + 1
                lines.append(f"{people[first]}\t{a}\t{people[second]}\t{b}")
        (root / "test" / "pairs.txt").write_text("\n".join(lines) + "\n")

    return publish(out, write)
