"""Detection, segmentation and embeddings on effnet trunks: the generated data, the models (channels
from feature_info for any member), the metrics against hand-made answers, training end to end
through the CLI (tiny canvases, tiny phi), resume, and bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.datasets.builtin import FASHION_MNIST_DIR
from effnet.datasets.canvases import MAX_IOU, _iou
from effnet.datasets.make import make_fmnist
from effnet.models.detection import HEADS, create_detector
from effnet.models.embedding import create_embedder
from effnet.models.segmentation import create_segmenter
from effnet.tasks.choices import DETECTOR_HEADS
from effnet.tasks.detection import coco_metrics
from effnet.tasks.embedding import verification_metrics
from effnet.tasks.segmentation import scores_from_confusion
from effnet.training.trainer import Trainer
from effnet.weights.io import load, save
from tests.conftest import free_port, import_required, require_component, requires, run_cli

needs_fmnist = requires("Fashion-MNIST", FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist")
TINY = {"train": 6, "val": 3, "test": 3}


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def det_data(tmp_path_factory) -> Path:
    require_component("Fashion-MNIST", FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist")
    return make_fmnist("fmnist-det", tmp_path_factory.mktemp("d") / "det", counts=TINY)


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    require_component("Fashion-MNIST", FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist")
    return make_fmnist("fmnist-seg", tmp_path_factory.mktemp("s") / "seg", counts=TINY, background="texture")


# --- data -------------------------------------------------------------------------------------


@needs_fmnist
def test_same_seed_same_bytes_and_a_fixed_test_set(tmp_path, det_data):
    again = make_fmnist("fmnist-det", tmp_path / "again", counts=TINY)
    other = make_fmnist("fmnist-det", tmp_path / "other", counts=TINY, seed=1)
    assert digest(again) == digest(det_data)
    a, b = digest(det_data), digest(other)
    assert all(a[k] == b[k] for k in a if k.startswith("test/"))  # the test canvases ignore --seed
    assert any(a[k] != b[k] for k in a if k.startswith("train/images"))


@needs_fmnist
def test_canvas_boxes_are_the_visible_pixels_of_each_item(seg_data, tmp_path):
    det = make_fmnist("fmnist-det", tmp_path / "det", counts=TINY, background="texture")
    coco = json.loads((det / "train" / "annotations.json").read_text())
    for image in coco["images"]:
        mask = np.asarray(Image.open(seg_data / "train" / "masks" / image["file_name"]))
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert 1 <= len(anns) <= 5
        for a in anns:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w > 0 and h > 0
            inside = mask[y : y + h, x : x + w] == a["category_id"]
            # the box is tight: its first and last rows and columns hold visible pixels of its class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        boxes = [(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in anns]
        assert all(_iou(p, q) <= MAX_IOU + 1e-9 for i, p in enumerate(boxes) for q in boxes[i + 1 :])


def test_data_make_refuses_a_used_folder_and_leaves_nothing(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    proc = run_cli("data", "make", "lfw-faces", "--out", tmp_path / "used")
    assert proc.returncode == 2 and "not an empty folder" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "used"]


# --- models -------------------------------------------------------------------------------------


def test_detector_heads_listed_without_torch_match_the_models():
    assert DETECTOR_HEADS == (*HEADS, "efficientdet")


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b7", "efficientnet_lite2"])
def test_necks_take_channels_from_feature_info(name):
    with torch.device("meta"):
        det = create_detector(name, head="retinanet")
        seg = create_segmenter(name)
    trunk = det.trunk
    fpn_in = [block[0].in_channels for block in det.net.backbone.fpn.inner_blocks]
    assert fpn_in == trunk.feature_channels
    assert seg.decoder[0].conv1[0].in_channels == seg.trunk.feature_channels[-1] + seg.trunk.feature_channels[-2]


def test_any_input_size_gives_a_mask_of_that_size():
    model = create_segmenter(phi=-3, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 100, 75)).shape == (1, 3, 100, 75)


@pytest.mark.parametrize("make", ["detector", "segmenter", "embedder"])
def test_task_models_round_trip_through_a_file(tmp_path, make):
    model = {
        "detector": lambda: create_detector(phi=-3, head="fcos", num_classes=2, class_names=["a", "b"]),
        "segmenter": lambda: create_segmenter(phi=-3, num_classes=2, class_names=["bg", "fg"]),
        "embedder": lambda: create_embedder(phi=-3, num_classes=2, resolution=32),
    }[make]().eval()
    save(model, tmp_path / "m.safetensors")
    again = load(tmp_path / "m.safetensors")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), again(x)
    if make == "detector":
        a, b = a[0]["scores"], b[0]["scores"]
    assert type(again) is type(model) and again.class_names == model.class_names and torch.equal(a, b)


@pytest.mark.parametrize("make", ["faster_rcnn", "segmenter", "embedder"])
def test_task_models_export_to_onnx_checked_against_eager(tmp_path, make):
    from effnet.deploy.export import export
    from effnet.deploy.runtime import OnnxModel

    torch.manual_seed(0)
    model = {
        "faster_rcnn": lambda: create_detector(phi=-3, image_size=96),
        "segmenter": lambda: create_segmenter(phi=-3, num_classes=3, image_size=64),
        "embedder": lambda: create_embedder(phi=-3, resolution=48),
    }[make]()
    result = export(model, tmp_path / "m.onnx")
    assert result.relative_diff <= 1e-4 and OnnxModel(tmp_path / "m.onnx").config == model.config


# --- metrics against hand-made answers ------------------------------------------------------------


def test_coco_metrics_perfect_and_loose_boxes():
    truth = [{"boxes": np.array([[10, 10, 50, 50], [60, 60, 100, 90]], float), "labels": np.array([1, 2])}]
    perfect = [{**truth[0], "scores": np.array([0.9, 0.8])}]
    assert coco_metrics(truth, perfect, ["a", "b"])["map"] == pytest.approx(1.0)
    # IoU 40/55 = 0.73 with the truth: a hit at 0.50, a miss at 0.75
    loose = [{"boxes": np.array([[10, 10, 65, 50]], float), "labels": np.array([1]), "scores": np.array([0.9])}]
    one = [{"boxes": truth[0]["boxes"][:1], "labels": np.array([1])}]
    result = coco_metrics(one, loose, ["a"])
    assert result["ap50"] == pytest.approx(1.0) and result["ap75"] == pytest.approx(0.0)


def test_iou_and_dice_from_a_confusion_matrix():
    confusion = torch.tensor([[8, 2], [1, 3]])  # rows: truth, columns: prediction
    r = scores_from_confusion(confusion, ["bg", "fg"])
    assert r["per_class_iou"]["fg"] == pytest.approx(3 / 6) and r["per_class_dice"]["fg"] == pytest.approx(6 / 9)
    assert r["miou"] == pytest.approx((8 / 11 + 3 / 6) / 2) and r["foreground_iou"] == pytest.approx(3 / 6)


def test_verification_of_separable_and_random_scores():
    same = np.arange(600) % 2 == 0
    perfect = verification_metrics(same.astype(float), same)
    assert perfect["accuracy"] == 1.0 and perfect["roc_auc"] == 1.0 and perfect["tar_at_far_1e-2"] == 1.0
    noise = verification_metrics(np.random.default_rng(0).random(600), same)
    assert 0.35 < noise["roc_auc"] < 0.65


# --- end to end through the CLI ----------------------------------------------------------------


def assert_drawn_on(image, drawn) -> None:
    """``predict --out`` wrote the input image, at its size, with the answer drawn on it."""
    source, output = Image.open(image).convert("RGB"), Image.open(drawn).convert("RGB")
    assert output.size == source.size
    assert not np.array_equal(np.asarray(output), np.asarray(source))


FAST = ("--epochs", "1", "--batch-size", "3", "--phi", "-3", "--quiet")


def stop_after_saves(monkeypatch, count: int) -> None:
    """The trainer stops as Ctrl-C would, right after its ``count``-th checkpoint."""
    saves = []
    original = Trainer._save_state

    def save_then_stop(self):
        original(self)
        saves.append(self.global_step)
        if len(saves) == count:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_state", save_then_stop)


@needs_fmnist
def test_detection_trains_evaluates_predicts_and_resumes_bitwise(tmp_path, det_data, monkeypatch):
    run_cli("train", "--task", "detection", "--detector", "fcos", "--data", det_data, *FAST, "--out",
            tmp_path / "a").check()  # fmt: skip
    result = json.loads(run_cli("eval", "--weights", tmp_path / "a" / "best.safetensors", "--json").check().stdout)
    assert result["task"] == "detection" and set(result["per_class_ap"]) >= {"Trouser", "Bag"}
    # COCO's mAP is the mean AP of the classes present in the test canvases (NaN: absent); a
    # detector trained on 6 canvases for one epoch scores near 0, so the metric is checked, not a
    # floor (test_tasks_learn holds the learning).
    present = [ap for ap in result["per_class_ap"].values() if not np.isnan(ap)]
    assert present and result["map"] == pytest.approx(float(np.mean(present)), abs=1e-6)
    assert result["map"] <= result["ap50"]
    image, weights = det_data / "test" / "images" / "000000.png", tmp_path / "a" / "best.safetensors"
    proc = run_cli("predict", image, "--weights", weights, "--out", tmp_path / "drawn", "--score-threshold", "0",
                   "--json")  # fmt: skip
    drawn = json.loads(proc.check().stdout)[0]
    assert drawn["detections"]
    assert_drawn_on(image, drawn["output"])
    exported = json.loads(run_cli("export", "--weights", weights, "--out", tmp_path / "det.onnx", "--json").check()
                          .stdout)  # fmt: skip
    assert exported["relative_diff"] <= exported["tolerance"]
    # the export (NMS inside) and its int8 form evaluate and draw on ONNX Runtime like the torch model
    on_onnx = json.loads(run_cli("eval", "--weights", tmp_path / "det.onnx", "--json").check().stdout)
    assert on_onnx["per_class_ap"].keys() == result["per_class_ap"].keys()
    assert on_onnx["map"] == pytest.approx(result["map"], abs=0.02)
    report = json.loads(run_cli("quantize", "--weights", weights, "--calibration-images", "2", "--no-eval", "--out",
                                tmp_path / "int8.onnx", "--json").check().stdout)  # fmt: skip
    assert report["calibration_images"] == 2 and report["size_ratio"] < 0.5
    proc = run_cli("predict", image, "--weights", tmp_path / "int8.onnx", "--out", tmp_path / "drawn8",
                   "--score-threshold", "0", "--json")  # fmt: skip
    assert_drawn_on(image, json.loads(proc.check().stdout)[0]["output"])
    # A run stopped right after a mid-epoch checkpoint and resumed equals a run in one go (the
    # RPN/RoI sampling draws from the global RNG, which the resume state carries).
    common = ("--task", "detection", "--data", det_data, "--batch-size", "3", "--phi", "-3", "--quiet", "--epochs",
              "2", "--checkpoint-every", "1")  # fmt: skip
    run_cli("train", *common, "--out", tmp_path / "straight").check()
    stop_after_saves(monkeypatch, 4)  # initial, epoch 1 step 1, end of epoch 1, epoch 2 step 1
    assert run_cli("train", *common, "--out", tmp_path / "split").returncode == 130
    monkeypatch.undo()
    run_cli("train", *common, "--resume", "--out", tmp_path / "split").check()
    a = load(tmp_path / "straight" / "last.safetensors").state_dict()
    b = load(tmp_path / "split" / "last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_fmnist
def test_efficientdet_trains_evaluates_and_resumes_bitwise_as_a_detection_model(tmp_path, det_data, monkeypatch):
    from effnet.models.efficientdet_detector import EfficientDet

    # --model efficientdet_lite0 names the detector (it implies --detector efficientdet)
    common = ("--task", "detection", "--model", "efficientdet_lite0", "--data", det_data, "--batch-size", "3",
              "--quiet", "--epochs", "2", "--checkpoint-every", "1")  # fmt: skip
    row = json.loads(run_cli("train", *common, "--json", "--out", tmp_path / "straight").check().stdout)
    assert {"train_loss_classifier", "train_loss_box_reg", "val_map", "val_ap50"} <= set(row)
    weights = tmp_path / "straight" / "last.safetensors"
    model = load(weights)
    assert isinstance(model, EfficientDet) and model.config.name == "efficientdet_lite0"
    # the canvases are 128 px with 20-56 px objects: letterboxed to 128, anchors shrunk to fit them
    assert model.config.scale.image_size == 128 and model.config.scale.anchor_scale < 4.0
    result = json.loads(run_cli("eval", "--weights", weights, "--json").check().stdout)
    assert result["task"] == "detection" and set(result["per_class_ap"]) >= {"Trouser", "Bag"}
    assert result["map"] <= result["ap50"]
    stop_after_saves(monkeypatch, 4)  # initial, epoch 1 step 1, end of epoch 1, epoch 2 step 1
    assert run_cli("train", *common, "--out", tmp_path / "split").returncode == 130
    monkeypatch.undo()
    run_cli("train", *common, "--resume", "--out", tmp_path / "split").check()
    a, b = model.state_dict(), load(tmp_path / "split" / "last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_efficientdet_options_that_do_not_fit_are_refused_in_one_line():
    for args, message in [
        (("--model", "efficientdet_d0"), "--model efficientdet_d0 is an EfficientDet detector: train it with --task"),
        (("--task", "detection", "--model", "efficientdet_d0", "--detector", "fcos"),
         "--model efficientdet_d0 is an EfficientDet: leave out --detector fcos"),
    ]:  # fmt: skip
        proc = run_cli("train", "--data", "digits", *args, "--out", "/nonexistent/never-written")
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@needs_fmnist
def test_segmentation_trains_and_reports_iou(tmp_path, seg_data):
    row = json.loads(run_cli("train", "--task", "segmentation", "--data", seg_data, *FAST, "--augment", "light",
                             "--json", "--out", tmp_path / "r").check().stdout)  # fmt: skip
    assert {"val_miou", "val_foreground_iou", "val_mean_dice", "train_pixel_accuracy"} <= set(row)
    assert (tmp_path / "r" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2 and "val_miou" in metrics[0].split(",")  # a header and the one epoch
    result = json.loads(run_cli("eval", "--weights", tmp_path / "r" / "best.safetensors", "--json").check().stdout)
    # mIoU is the mean IoU of the classes present (NaN: neither in truth nor prediction)
    assert len(result["per_class_iou"]) == 11
    assert result["miou"] == pytest.approx(float(np.nanmean(list(result["per_class_iou"].values()))), abs=1e-6)
    image = seg_data / "test" / "images" / "000001.png"
    proc = run_cli("predict", image, "--weights", tmp_path / "r" / "best.safetensors", "--out", tmp_path / "drawn")
    assert proc.check()
    assert_drawn_on(image, tmp_path / "drawn" / "000001.png")


@needs_fmnist
def test_segmenter_is_pruned_in_its_trunk_quantized_and_its_exports_evaluate_alike(tmp_path, seg_data):
    run_cli("train", "--task", "segmentation", "--data", seg_data, *FAST, "--out", tmp_path / "r").check()
    weights = tmp_path / "r" / "best.safetensors"
    report = json.loads(run_cli("prune", "--weights", weights, "--ratio", "0.5", "--finetune-epochs", "1",
                                "--batch-size", "3", "--out", tmp_path / "p.safetensors", "--json")
                        .check().stdout)  # fmt: skip
    assert report["task"] == "segmentation" and report["metric"] == "mIoU"
    # the report's score is the pruned file's own: evaluated again on the validation canvases
    pruned_eval = json.loads(run_cli("eval", "--weights", tmp_path / "p.safetensors", "--split", "val", "--json")
                             .check().stdout)  # fmt: skip
    assert report["val_score_finetuned"] == pytest.approx(pruned_eval["miou"], abs=1e-6)
    assert report["params_after"] < 0.8 * report["params_before"] and report["macs_ratio"] < 0.7
    pruned = load(tmp_path / "p.safetensors")  # rebuilt from its config alone, without Torch-Pruning
    assert pruned.num_params() == report["params_after"] and pruned.trunk.config.hidden_channels
    x = torch.randn(1, 3, 64, 64)
    assert pruned.eval()(x).shape == (1, 11, 64, 64)
    torch_eval = json.loads(run_cli("eval", "--weights", weights, "--json").check().stdout)
    report = json.loads(run_cli("quantize", "--weights", weights, "--calibration-images", "3", "--out",
                                tmp_path / "int8.onnx", "--json").check().stdout)  # fmt: skip
    # the quantizer's fp32 export is scored by the same code as the torch model: the same mIoU
    assert report["metric"] == "mIoU" and report["fp32_score"] == pytest.approx(torch_eval["miou"], abs=1e-3)
    # int8 keeps the fp32 export's mIoU
    assert abs(report["int8_score"] - report["fp32_score"]) <= 0.05, report
    assert report["int8_bytes"] < 0.5 * report["fp32_bytes"]
    on_int8 = json.loads(run_cli("eval", "--weights", tmp_path / "int8.onnx", "--json").check().stdout)
    assert on_int8["miou"] == pytest.approx(report["int8_score"])
    proc = run_cli("compress", "--weights", weights, "--out", tmp_path / "c")
    assert proc.returncode == 2 and "effnet prune and effnet quantize" in proc.stderr and not (tmp_path / "c").exists()


def test_embedding_trains_and_verifies_pairs_in_lfw_format(tmp_path):
    rng = np.random.default_rng(0)
    people = tmp_path / "people"
    for k, name in enumerate(["ann", "bob", "cyd"]):
        (people / name).mkdir(parents=True)
        for n in range(1, 7):
            pixels = np.clip(rng.normal(60 + 70 * k, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(people / name / f"{name}_{n:04d}.png")
    (tmp_path / "pairs.txt").write_text("1\t2\nann\t1\t2\nbob\t3\t4\nann\t1\tbob\t2\ncyd\t5\tann\t6\n")
    run_cli("train", "--task", "embedding", "--data", people, "--image-size", "32", *FAST, "--out",
            tmp_path / "r").check()  # fmt: skip
    weights = tmp_path / "r" / "best.safetensors"
    result = json.loads(run_cli("eval", "--weights", weights, "--pairs", tmp_path / "pairs.txt", "--json")
                        .check().stdout)  # fmt: skip
    assert result["pairs"] == 4 and result["same_pairs"] == 2
    # the three people differ in brightness: every same pair must score above every other (measured 1.0)
    assert result["roc_auc"] == 1.0, result
    embedding = json.loads(run_cli("predict", people / "ann" / "ann_0001.png", "--weights", weights, "--json")
                           .check().stdout)[0]["embedding"]  # fmt: skip
    assert len(embedding) == 512 and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-4)
    (tmp_path / "bad.txt").write_text("ann\t1\tdan\t2\n")
    proc = run_cli("eval", "--weights", weights, "--pairs", tmp_path / "bad.txt")
    assert proc.returncode == 2 and "no person 'dan'" in proc.stderr and "Traceback" not in proc.stderr


# --- each task learns: a short seeded run against the same run untrained ------------------------


def trained_and_untrained(tmp_path, *args) -> tuple[dict, dict]:
    """The same seeded run twice, at --lr 1e-9 (the weights stay as initialised; BN statistics are
    measured on the data, as any evaluation of the untrained model would need) and at a real lr:
    the last epoch's rows, untrained first."""
    rows = []
    for lr in ("1e-9", "0.004"):
        torch.manual_seed(0)
        out = run_cli("train", *args, "--lr", lr, "--quiet", "--json", "--out", tmp_path / f"lr{lr}").check().stdout
        rows.append(json.loads(out))
    return rows[0], rows[1]


@needs_fmnist
def test_detection_learns(tmp_path):
    """FCOS on ImageNet Lite0 (its trunk pretrained, heads new), 40 canvases, 2 epochs (measured:
    validation mAP 0.000 -> 0.023, AP50 0.000 -> 0.081)."""
    data = make_fmnist("fmnist-det", tmp_path / "det", counts={"train": 40, "val": 12, "test": 3})
    before, after = trained_and_untrained(tmp_path, "--task", "detection", "--detector", "fcos", "--model",
                                          "efficientnet_lite0", "--weights", "lite0", "--data", data, "--epochs", "2",
                                          "--batch-size", "4")  # fmt: skip
    assert after["val_ap50"] >= before["val_ap50"] + 0.04, (before, after)
    assert after["val_map"] >= before["val_map"] + 0.01, (before, after)


@needs_fmnist
def test_segmentation_learns(tmp_path):
    """U-Net on a phi -3 trunk from scratch, 40 canvases, 2 epochs (measured: validation mIoU
    0.012 -> 0.087, validation loss 2.54 -> 0.62)."""
    data = make_fmnist("fmnist-seg", tmp_path / "seg", counts={"train": 40, "val": 12, "test": 3})
    before, after = trained_and_untrained(tmp_path, "--task", "segmentation", "--data", data, "--epochs", "2",
                                          "--batch-size", "4", "--phi", "-3")  # fmt: skip
    assert after["val_miou"] >= before["val_miou"] + 0.04, (before, after)
    assert after["val_loss"] < 0.5 * before["val_loss"], (before, after)


def test_embedding_learns(tmp_path):
    """ArcFace on a phi -3 trunk: scikit-learn's digits as ten "people" of 20 images each, 3 epochs;
    120 seeded pairs in LFW's format (measured: ROC-AUC 0.570 untrained -> 0.826)."""
    from sklearn.datasets import load_digits

    digits, per = load_digits(), 20
    names = [f"p{d}" for d in range(10)]
    for d, name in enumerate(names):
        (tmp_path / "people" / name).mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(digits.target == d)[:per], 1):
            pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
            image = Image.fromarray(pixels).resize((24, 24), Image.NEAREST).convert("RGB")
            image.save(tmp_path / "people" / name / f"{name}_{n:04d}.png")
    rng = np.random.default_rng(0)
    same = [(names[rng.integers(10)], *(rng.choice(per, 2, replace=False) + 1)) for _ in range(60)]
    other = [(*rng.choice(10, 2, replace=False), *rng.integers(1, per + 1, 2)) for _ in range(60)]
    lines = [f"{p}\t{a}\t{b}" for p, a, b in same] + [f"{names[p]}\t{a}\t{names[q]}\t{b}" for p, q, a, b in other]
    (tmp_path / "pairs.txt").write_text("1\t60\n" + "\n".join(lines) + "\n")
    scores = []
    for lr in ("1e-9", "0.004"):
        torch.manual_seed(0)
        run_cli("train", "--task", "embedding", "--data", tmp_path / "people", "--image-size", "32", "--epochs", "3",
                "--batch-size", "8", "--phi", "-3", "--lr", lr, "--quiet", "--out", tmp_path / lr).check()  # fmt: skip
        result = run_cli("eval", "--weights", tmp_path / lr / "best.safetensors", "--pairs", tmp_path / "pairs.txt",
                         "--json").check()  # fmt: skip
        scores.append(json.loads(result.stdout)["roc_auc"])
    assert scores[1] >= scores[0] + 0.15, scores


# --- bad input ------------------------------------------------------------------------------------


def coco_folder(root: Path, boxes: list, category: int = 1, missing: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    images = []
    for i in range(3):
        if not (missing and i == 2):
            Image.new("RGB", (64, 48)).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48})
    anns = [{"id": j + 1, "image_id": 1, "category_id": category, "bbox": b} for j, b in enumerate(boxes)]
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


@pytest.mark.parametrize(
    "kind, message",
    [
        ("outside", "lies outside the 64x48 image"),
        ("zero", "zero-area box"),
        ("category", "unknown category id 7"),
        ("missing", "2.png does not exist"),
    ],
)
def test_bad_coco_files_are_refused_before_training(tmp_path, kind, message):
    boxes = {"outside": [[50, 10, 20, 10]], "zero": [[5, 5, 0, 8]]}.get(kind, [[5, 5, 10, 10]])
    data = coco_folder(tmp_path / "data", boxes, category=7 if kind == "category" else 1, missing=kind == "missing")
    proc = run_cli("train", "--task", "detection", "--data", data, *FAST, "--out", tmp_path / "run")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind, message", [("size", "is 20x20 but"), ("label", "values [9] are outside the 3 classes")])
def test_bad_masks_are_refused_before_training(tmp_path, kind, message):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text('["bg", "a", "b"]')
    for i in range(3):
        Image.new("RGB", (32, 32)).save(root / "images" / f"{i}.png")
        mask = np.zeros((20, 20) if kind == "size" and i == 1 else (32, 32), np.uint8)
        mask[0, 0] = 9 if kind == "label" and i == 1 else 1
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    proc = run_cli("train", "--task", "segmentation", "--data", root, *FAST, "--out", tmp_path / "run")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# --- the other generated datasets ------------------------------------------------------------------


def test_nuclei_split_by_columns_with_binary_masks(tmp_path):
    from effnet.datasets.masks import load_masks

    import_required("tifffile", "the tasks extra (pip install -e '.[dev]') installs it")
    out = run_cli("data", "make", "nuclei", "--out", tmp_path / "nuclei", "--json").check()
    assert json.loads(out.stdout)["files"] > 0
    info = json.loads((tmp_path / "nuclei" / "dataset.json").read_text())
    assert info["nuclei"] == 125 and info["test_columns"] == [384, 511]
    data = load_masks(tmp_path / "nuclei")
    assert data.classes == ["background", "nucleus"] and len(data.split("test")) == 4
    assert len(data.split("train")) + len(data.split("val")) == 35
    # test tiles come only from columns 384-511, training tiles only from 0-383
    assert all(int(p.stem.split("_x")[1]) >= 384 for p in data.split("test").images)
    assert all(int(p.stem.split("_x")[1]) + 128 <= 384 for p in data.split("train").images)


@needs_fmnist
def test_fmnist_pairs_in_lfw_format_over_unseen_classes(tmp_path):
    from effnet.datasets.pairs import read_pairs

    root = tmp_path / "p"
    run_cli("data", "make", "fmnist-pairs", "--out", root, "--per-class", "12").check()
    assert sorted(p.name for p in (root / "train" / "people").iterdir()) == ["Coat", "Dress", "Pullover",
                                                                             "T-shirt-top", "Trouser"]  # fmt: skip
    pairs = read_pairs(root / "test" / "pairs.txt")
    assert len(pairs) == 6000 and sum(pairs.same) == 3000 and sorted(set(pairs.fold)) == list(range(10))
    assert {p.parent.name for p in pairs.first} <= {"Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"}


@needs_fmnist
def test_segmentation_under_torchrun_two_processes(tmp_path, seg_data):
    run = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    cmd = [
        *launch,
        "-m",
        "effnet",
        "train",
        "--task",
        "segmentation",
        "--data",
        seg_data,
        *FAST,
        "--out",
        run,
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout)
    assert row["step"] == 1  # 6 canvases / 2 processes / batch 3
    assert len(list((run / "tensorboard").iterdir())) == 1  # only rank 0 writes
    assert load(run / "last.safetensors").task == "segmentation"
