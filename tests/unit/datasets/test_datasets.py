"""Training data: real Fashion-MNIST and digits, image folders, and every kind of bad file."""

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.datasets import ImageDataset, check_files, load_data
from effnet.datasets.builtin import FASHION_MNIST_DIR
from effnet.datasets.idx import read_idx
from effnet.datasets.transforms import train_transform
from effnet.models.preprocessing import Preprocessing
from tests.conftest import requires


def write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def test_idx_roundtrip_plain_and_gzipped(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)


def test_idx_truncated_and_foreign_files(tmp_path):
    write_idx(tmp_path / "t.idx", np.zeros((10, 5), dtype=np.uint8))
    (tmp_path / "t.idx").write_bytes((tmp_path / "t.idx").read_bytes()[:-3])
    with pytest.raises(effnet.UsageError, match="truncated"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "x.idx").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(effnet.UsageError, match="magic"):
        read_idx(tmp_path / "x.idx")


@requires("Fashion-MNIST", FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist")
def test_real_fashion_mnist():
    data = load_data("fashion-mnist", val_split=0.1, seed=3)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.split("train").images.shape[1:] == (28, 28)
    assert np.bincount(data.split("test").labels).tolist() == [1000] * 10
    # Seeded: the same seed gives the same held-out images, another seed other ones.
    again = load_data("fashion-mnist", val_split=0.1, seed=3)
    np.testing.assert_array_equal(again.split("val").images, data.split("val").images)
    other = load_data("fashion-mnist", val_split=0.1, seed=4)
    assert not np.array_equal(other.split("val").labels, data.split("val").labels)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(effnet.UsageError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_from_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    data = load_data("fashion-mnist", data_dir=tmp_path, val_split=0.2, limit_train=7)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7, "val": 10, "test": 20}


def test_digits_splits_and_transforms():
    data = load_data("digits", seed=0)
    assert sum(len(s) for s in data.splits.values()) == 1797
    assert data.split("train").images.max() == 255
    x, y = ImageDataset(data.split("train"), train_transform(half_normalized(32), "paper"))[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    x, _ = ImageDataset(data.split("test"), half_normalized(24).transform())[0]
    assert x.shape == (3, 24, 24) and torch_equal_channels(x)


def test_random_erasing_blanks_one_rectangle_to_the_mean():
    torch.manual_seed(0)
    image = load_data("digits", seed=0).split("train").images[0]
    erased = train_transform(half_normalized(32), "light", random_erase=1.0)(image)
    kept = train_transform(half_normalized(32), "light")(image)
    assert erased.shape == kept.shape == (3, 32, 32)
    zero = (erased == 0).all(dim=0)  # erased to 0, the mean after normalization, in every channel
    rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
    assert len(rows) and len(cols)
    box = zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.all() and 0.02 * 32 * 32 <= box.numel() <= 0.33 * 32 * 32  # torchvision's default scale


def half_normalized(size: int) -> Preprocessing:
    return Preprocessing(resolution=size, resize=size, mean=(0.5,) * 3, std=(0.5,) * 3)


def torch_equal_channels(x):
    return bool((x[0] == x[1]).all() and (x[1] == x[2]).all())


def make_tree(root: Path, classes=("cat", "dog"), per_class=6, size=(12, 10)):
    for c_index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, (40 * c_index, 10 * i, 0)).save(root / name / f"{i}.png")


def test_folder_with_train_and_val(tmp_path):
    make_tree(tmp_path / "train")
    make_tree(tmp_path / "val", per_class=2)
    data = load_data(str(tmp_path))
    assert data.classes == ["cat", "dog"]
    assert (len(data.split("train")), len(data.split("val"))) == (12, 4)
    x, y = ImageDataset(data.split("val"), half_normalized(16).transform())[3]
    assert x.shape == (3, 16, 16) and y == 1


def test_single_tree_split_is_stable_when_files_are_added(tmp_path):
    make_tree(tmp_path, per_class=40)
    before = load_data(str(tmp_path), val_split=0.25, seed=1)
    make_tree(tmp_path / "extra_copy", per_class=1)  # not a class of the original tree's files
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "new.png")
    after = load_data(str(tmp_path), val_split=0.25, seed=1)
    old_val = {p for p, _ in before.split("val").samples}
    new_val = {p for p, _ in after.split("val").samples}
    assert old_val <= new_val | {str(tmp_path / "cat" / "new.png")}
    assert 10 <= len(old_val) <= 30


def test_empty_class_folder_is_an_error(tmp_path):
    make_tree(tmp_path / "train")
    (tmp_path / "train" / "bird").mkdir()
    with pytest.raises(effnet.UsageError, match="bird: empty class folder"):
        load_data(str(tmp_path))


def test_val_classes_must_match_train(tmp_path):
    make_tree(tmp_path / "train")
    make_tree(tmp_path / "val", classes=("cat", "fox"))
    with pytest.raises(effnet.UsageError, match="differ"):
        load_data(str(tmp_path))


def write_bad_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not a jpeg")
    Image.new("RGB", (64, 64), "red").save(folder / "full.jpg", quality=95)
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:300])
    (folder / "full.jpg").unlink()
    (folder / "notes.txt").write_text("hello")
    return {"zero.png": "empty file", "text.jpg": "cannot decode", "truncated.jpg": "cannot decode",
            "notes.txt": "not an image file"}  # fmt: skip


def test_bad_images_stop_training_data_naming_the_file(tmp_path):
    make_tree(tmp_path / "train")
    write_bad_files(tmp_path / "train" / "dog")
    with pytest.raises(effnet.UsageError, match=r"dog/notes.txt: not an image file .*\(3 more.*--bad-images skip"):
        load_data(str(tmp_path), val_split=0.3)


def test_skip_policy_keeps_exactly_the_good_files(tmp_path):
    make_tree(tmp_path / "train")
    write_bad_files(tmp_path / "train" / "dog")
    data = load_data(str(tmp_path), val_split=0.3, bad_images="skip")
    kept = {p for split in data.splits.values() for p, _ in split.samples}
    assert len(kept) == 12 and len(data.skipped) == 4
    assert all(not Path(p).name.startswith(("zero", "text", "trunc", "notes")) for p in kept)


def test_decompression_bomb_is_reported(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    report = check_files([str(tmp_path / "big.png")])
    assert report.bad[0]["reason"].startswith("refused, decompression bomb")


def test_data_check_cli_json(tmp_path):
    make_tree(tmp_path / "cat", classes=("a",), per_class=3)
    expected = write_bad_files(tmp_path / "mixed")
    proc = subprocess.run([sys.executable, "-m", "effnet", "data", "check", str(tmp_path), "--json"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["good"] == 3
    reasons = {Path(b["path"]).name: b["reason"] for b in report["bad"]}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name]


def test_data_check_cli_clean_and_missing(tmp_path):
    make_tree(tmp_path, per_class=2)
    assert subprocess.run([sys.executable, "-m", "effnet", "data", "check", str(tmp_path)]).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "effnet", "data", "check", str(tmp_path / "nope")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "no such file" in proc.stderr
