"""Bad detection data, pairs files and weights files: each is refused with one line that names the
file and what is wrong (exit 2, no traceback), or warned about when it is legal but suspicious; and
``effnet.save`` writes the same bytes for the same model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

import effnet
from effnet.core.errors import EffnetWarning, UsageError
from effnet.datasets.builtin import FASHION_MNIST_DIR
from effnet.datasets.coco import load_detection
from effnet.datasets.make import make_fmnist, make_fmnist_pairs
from effnet.models.embedding import create_embedder
from effnet.weights.io import load, save
from tests.conftest import import_required, require_component, requires, run_cli

needs_fmnist = requires("Fashion-MNIST", FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist")
FAST = ("--epochs", "1", "--batch-size", "3", "--phi", "-3", "--quiet")


def refused(proc, *needles: str) -> str:
    """One line on stderr, exit 2, no traceback, every needle in it."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return proc.stderr


# --- COCO detection data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def det_data(tmp_path_factory) -> Path:
    """FMNIST-Det as `effnet data make fmnist-det` writes it: train/, val/ and test/ folders."""
    if not FASHION_MNIST_DIR.is_dir():
        require_component("Fashion-MNIST", False, "make test installs dataset-fashion-mnist")
    return make_fmnist("fmnist-det", tmp_path_factory.mktemp("d") / "det", counts={"train": 6, "val": 3, "test": 3})


def edited(det_data: Path, tmp_path: Path, edit) -> Path:
    """A copy of the generated data whose train/annotations.json ``edit(coco)`` changed."""
    root = shutil.copytree(det_data, tmp_path / "data")
    path = root / "train" / "annotations.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    return root


def train_detection(data: Path, tmp_path: Path):
    return run_cli("train", "--task", "detection", "--data", data, *FAST, "--out", tmp_path / "run")


@needs_fmnist
@pytest.mark.parametrize(
    "box, messages",
    [
        ([float("nan"), 10, 10, 10], ("[nan, 10, 10, 10]", "not finite")),
        ([float("inf"), 10, 10, 10], ("[inf, 10, 10, 10]", "not finite")),
        ([5, 5, -8, 10], ("[5, 5, -8, 10]", "negative width or height")),
    ],
    ids=["nan", "inf", "negative-width"],
)
def test_non_finite_and_negative_boxes_are_refused_on_load(det_data, tmp_path, box, messages):
    def edit(coco):
        coco["annotations"][0]["bbox"] = box

    data = edited(det_data, tmp_path, edit)
    first = json.loads((det_data / "train" / "annotations.json").read_text())["annotations"][0]
    refused(train_detection(data, tmp_path), str(data / "train" / "annotations.json"), f"annotation {first['id']}",
            f"image id {first['image_id']}", *messages)  # fmt: skip
    assert not (tmp_path / "run").exists()


@needs_fmnist
def test_deeply_nested_annotations_are_a_usage_error(det_data, tmp_path):
    data = shutil.copytree(det_data, tmp_path / "data")
    (data / "train" / "annotations.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(train_detection(data, tmp_path), str(data / "train" / "annotations.json"), "nested too deeply")


@needs_fmnist
@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_image_paths_outside_the_data_folder_are_refused(det_data, tmp_path, kind):
    coco = json.loads((det_data / "train" / "annotations.json").read_text())
    image = coco["images"][0]
    outside = tmp_path / "outside.png"  # a real image of the right size, outside the data folder
    shutil.copy(det_data / "train" / "images" / image["file_name"], outside)
    name = str(outside) if kind == "absolute" else "../../../outside.png"

    def edit(coco):
        coco["images"][0]["file_name"] = name

    data = edited(det_data, tmp_path, edit)
    assert (data / "train" / "images" / name).resolve() == outside.resolve()
    refused(train_detection(data, tmp_path), str(data / "train" / "annotations.json"), f"image id {image['id']}",
            repr(name), "points outside")  # fmt: skip


@needs_fmnist
def test_a_file_without_any_box_is_refused(det_data, tmp_path):
    def edit(coco):
        coco["annotations"] = []

    data = edited(det_data, tmp_path, edit)
    refused(train_detection(data, tmp_path), str(data / "train" / "annotations.json"), "holds no boxes")


@needs_fmnist
def test_images_without_boxes_are_counted_in_a_warning(det_data, tmp_path):
    def edit(coco):  # the first two images become background images, which COCO allows
        background = {coco["images"][0]["id"], coco["images"][1]["id"]}
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in background]

    data = edited(det_data, tmp_path, edit)
    with pytest.warns(EffnetWarning, match=r"train/annotations\.json: 2 of 6 images have no boxes"):
        bundle = load_detection(data)
    assert len(bundle.split("train")) == 6


# --- LFW pairs files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory) -> tuple[Path, Path]:
    """(the people/ folder of `effnet data make fmnist-pairs`, an embedder's weights file)."""
    if not FASHION_MNIST_DIR.is_dir():
        require_component("Fashion-MNIST", False, "make test installs dataset-fashion-mnist")
    root = tmp_path_factory.mktemp("p")
    made = make_fmnist_pairs(root / "pairs", per_class=12)
    embedder = create_embedder("efficientnet_b0", width=0.25, depth=0.25, resolution=32, embedding_dim=8)
    return made / "test" / "people", save(embedder, root / "embedder.safetensors")


@needs_fmnist
@pytest.mark.parametrize("header, body", [("0 300", False), ("10 0", True), ("-1 300", True)])
def test_pairs_header_must_be_two_positive_integers(pairs_data, tmp_path, header, body):
    people, weights = pairs_data
    lines = (people.parent / "pairs.txt").read_text().splitlines()
    assert lines[0].split() == ["10", "300"]  # LFW's header, as generated
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join([header, *(lines[1:] if body else [])]) + "\n")
    proc = run_cli("eval", "--weights", weights, "--pairs", pairs, "--people", people)
    refused(proc, f"{pairs}:1", repr(header), "positive integers")


# --- weights files --------------------------------------------------------------------------------

SOURCES = ("effnet", "torchvision", "timm", "lukemelas")
STEM_KEYS = {"effnet": "stem.conv.weight", "torchvision": "features.0.0.weight", "timm": "conv_stem.weight",
             "lukemelas": "_conv_stem.weight"}  # fmt: skip


@pytest.fixture(scope="module")
def peers(tmp_path_factory) -> dict[str, Path]:
    """B0 state dicts (4 classes) as each implementation saves them, plus an image to predict."""
    root = tmp_path_factory.mktemp("peers")
    timm = import_required("timm")
    lukemelas = import_required("efficientnet_pytorch")
    models = {
        "effnet": lambda: effnet.create_model("efficientnet_b0", num_classes=4),
        "torchvision": lambda: torchvision.models.efficientnet_b0(num_classes=4),
        "timm": lambda: timm.create_model("efficientnet_b0", num_classes=4),
        "lukemelas": lambda: lukemelas.EfficientNet.from_name("efficientnet-b0", num_classes=4),
    }
    files = {}
    for source, make in models.items():
        torch.save(make().state_dict(), root / f"{source}.pth")
        files[source] = root / f"{source}.pth"
    Image.new("RGB", (40, 30), (120, 80, 40)).save(root / "image.png")
    files["image"] = root / "image.png"
    return files


@pytest.mark.parametrize("given", SOURCES)
@pytest.mark.parametrize("held", SOURCES)
def test_every_wrong_source_is_one_line_naming_the_source_the_keys_look_like(peers, held, given):
    proc = run_cli("predict", peers["image"], "--weights", peers[held], "--model", "efficientnet_b0",
                   "--source", given, "--json")  # fmt: skip
    if held == given:  # the control: the right source loads and predicts
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(json.loads(proc.stdout)[0]["top"]) > 0
    else:
        refused(proc, str(peers[held]), f"not {given} weights", f"look like {held} weights", STEM_KEYS[held])


def test_wrong_source_through_the_api_is_a_weights_error(peers):
    with pytest.raises(effnet.WeightsError, match="look like timm weights"):
        load(peers["timm"], model="efficientnet_b0", source="torchvision")


@pytest.fixture()
def tiny_b0() -> torch.nn.Module:
    return effnet.create_model("efficientnet_b0", num_classes=3, width=0.25, depth=0.25, class_names=["a", "b", "c"])


def test_model_naming_another_architecture_is_refused_for_an_effnet_file(tmp_path, tiny_b0):
    path = save(tiny_b0, tmp_path / "b0.safetensors")
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30), (120, 80, 40)).save(image)
    proc = run_cli("predict", image, "--weights", path, "--model", "efficientnetv2_s")
    refused(proc, f"--weights {path} holds efficientnet_b0, not efficientnetv2_s")
    with pytest.raises(UsageError, match="holds efficientnet_b0, not efficientnetv2_s"):
        load(path, model="efficientnetv2_s")
    assert load(path, model="efficientnet_b0").config == tiny_b0.config  # naming the right one is fine


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_save_is_byte_deterministic_and_survives_a_round_trip(tmp_path, tiny_b0):
    extra = {"training": json.dumps({"data": "x", "seed": 3, "epochs": 2}), "note": "same bytes"}
    first = save(tiny_b0, tmp_path / "1.safetensors", extra)
    assert {sha256(save(tiny_b0, tmp_path / f"{i}.safetensors", extra)) for i in range(2, 6)} == {sha256(first)}
    plain = save(tiny_b0, tmp_path / "plain.safetensors")
    again = save(load(plain), tmp_path / "again.safetensors")  # save, load, save
    assert sha256(again) == sha256(plain)
    assert load(again).state_dict().keys() == tiny_b0.state_dict().keys()
