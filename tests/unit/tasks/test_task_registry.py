"""The task registry: one list of tasks that every command reads, and a new task added with one
``register`` call (a toy task below: the value of a handwritten digit, as a regression)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.core.errors import UsageError
from effnet.datasets.loading import ImageDataset, load_data
from effnet.models.config import ModelConfig
from effnet.models.registry import build_model
from effnet.tasks.entry import EvalData, TaskEntry
from effnet.tasks.registry import get_task, register, task_names, task_of, unregister
from tests.conftest import run_cli

BUILT_IN = ("classification", "detection", "segmentation", "embedding")


def test_the_built_in_tasks_are_registered_once_each():
    assert task_names()[:4] == BUILT_IN
    for name in BUILT_IN:
        assert get_task(name).name == name
    with pytest.raises(ValueError, match="registered already"):
        register("detection", metric="mAP", where="effnet.tasks.detection:ENTRY")


def test_an_unknown_task_is_named_with_a_suggestion():
    with pytest.raises(UsageError, match="did you mean segmentation"):
        get_task("segmentaton")
    rc = run_cli("eval", "--weights", "x.safetensors", "--task", "segmentaton")
    assert rc.returncode == 2 and "invalid choice" in rc.stderr


def test_every_model_knows_its_task():
    assert task_of(effnet.create_model("efficientnet_b0", num_classes=3)) == "classification"
    assert task_of(torch.nn.Linear(2, 2)) == "classification"  # a user's own module: the default


class ValueMAE:
    """Mean absolute error of the predicted digit value; the score is its negative (higher is better)."""

    def __init__(self):
        self.error, self.n = 0.0, 0

    def update(self, outputs, targets, loss_sum=None):
        self.error += (outputs[:, 0].float() - targets.float()).abs().sum().item()
        self.n += len(targets)

    def summary(self):
        mae = self.error / max(1, self.n)
        return {"mae": mae, "n": self.n, "score": -mae}


class DigitValueTask:
    """The trainer's side of the toy task: a regression loss on the digit's value."""

    name = "digit_value"
    val_keys = ("mae",)
    val_batch = 64

    def split_batch(self, batch):
        images, labels, *rest = batch
        return images, labels, {}

    def to_device(self, labels, device):
        return labels.to(device)

    def forward(self, net, images, labels):
        return net(images)

    def loss(self, outputs, labels):
        return torch.nn.functional.smooth_l1_loss(outputs[:, 0].float(), labels.float())

    def train_counts(self, outputs, labels):
        return {"n": len(labels), "abs_error": (outputs[:, 0].float() - labels).abs().sum().item()}

    def train_summary(self, totals):
        return {"train_mae": totals.get("abs_error", 0) / max(1, totals.get("n", 0))}

    def metrics(self):
        return ValueMAE()


class DigitValue(TaskEntry):
    name = "digit_value"
    max_eval_batch = None

    def training_task(self, model, **options):
        return DigitValueTask()

    def training_data(self, cfg):
        return load_data(cfg.data, val_split=cfg.val_split, seed=cfg.seed, limit_train=cfg.limit_train)

    def training_setup(self, cfg, data, trunk, continuing=None):
        model = build_digit_value(replace(trunk, num_classes=1, resolution=cfg.image_size or trunk.resolution))
        transform = model.preprocessing.transform()
        train, val = (ImageDataset(data.split(s), transform) for s in ("train", "val"))
        return model, DigitValueTask(), train, val

    def eval_data(self, model, options, split, training, *, origin="the model", **kwargs):
        bundle = load_data(**options)
        return EvalData(ImageDataset(bundle.split(split), model.preprocessing.transform()), None, ValueMAE(), None)

    def format(self, model, output, *, top_k=5, score_threshold=0.5):
        return {"value": round(float(output[0]), 4)}


def build_digit_value(config: ModelConfig, class_names=None):
    model = build_model(config)
    model.task = "digit_value"
    return model


@pytest.fixture
def toy_task():
    register("digit_value", metric="-MAE", where=DigitValue(), model=(ModelConfig, build_digit_value))
    yield
    unregister("digit_value")


@pytest.mark.slow
def test_a_new_task_is_one_registration_and_every_command_serves_it(toy_task, tmp_path):
    config = effnet.create_model(phi=-3, num_classes=1, resolution=32).config
    model = build_digit_value(config).eval()
    path = effnet.save(model, tmp_path / "toy.safetensors")

    opened = effnet.open(path)
    assert opened.task == "digit_value" and isinstance(opened, torch.nn.Module)
    for name, value in opened.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name

    # eval: the score is the toy metric, computed here independently on the same test images
    result = json.loads(run_cli("eval", "--weights", path, "--data", "digits", "--json").check().stdout)
    data = load_data("digits")
    dataset = ImageDataset(data.split("test"), model.preprocessing.transform())
    with torch.no_grad():
        values = torch.cat([model(torch.stack([dataset[i][0] for i in range(s, min(s + 64, len(dataset)))]))
                            for s in range(0, len(dataset), 64)])[:, 0]  # fmt: skip
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    expected = (values - labels).abs().mean().item()
    assert result["task"] == "digit_value" and result["metric"] == "-MAE" and result["n"] == len(dataset) == 359
    assert result["mae"] == pytest.approx(expected, rel=1e-4) and result["score"] == pytest.approx(-expected, rel=1e-4)
    assert run_cli("eval", "--weights", path, "--data", "digits", "--task", "digit_value").returncode == 0

    # predict: the entry's format, for the torch file and for its ONNX export on ONNX Runtime
    image = tmp_path / "digit.png"
    Image.fromarray(data.split("test").images[0]).save(image)
    torch_pred = json.loads(run_cli("predict", image, "--weights", path, "--json").check().stdout)
    exported = tmp_path / "toy.onnx"
    run_cli("export", "--weights", path, "--out", exported, "--dynamic-batch").check()
    onnx_pred = json.loads(run_cli("predict", image, "--weights", exported, "--json").check().stdout)
    assert set(torch_pred[0]) == {"image", "value", "engine"} and torch_pred[0]["engine"] == "torch"
    assert onnx_pred[0]["value"] == pytest.approx(torch_pred[0]["value"], abs=1e-3)
    on_onnx = json.loads(run_cli("eval", "--weights", exported, "--data", "digits", "--json").check().stdout)
    assert on_onnx["task"] == "digit_value" and on_onnx["mae"] == pytest.approx(expected, rel=1e-4)
    # a drawing the task does not make is refused, by name
    refused = run_cli("predict", image, "--weights", path, "--out", tmp_path / "drawn")
    assert refused.returncode == 2 and "a digit_value model's predictions are printed" in refused.stderr
    assert np.isfinite(onnx_pred[0]["value"])


def test_without_its_registration_a_toy_file_is_refused_in_one_line(tmp_path):
    config = effnet.create_model(phi=-3, num_classes=1, resolution=32).config
    model = build_digit_value(config)
    register("digit_value", metric="-MAE", where=DigitValue(), model=(ModelConfig, build_digit_value))
    try:
        path = effnet.save(model, tmp_path / "toy.safetensors")
    finally:
        unregister("digit_value")
    rc = run_cli("eval", "--weights", path, "--data", "digits")
    assert rc.returncode == 2 and "unknown task 'digit_value'" in rc.stderr and "Traceback" not in rc.stderr


def test_a_registered_task_trains_with_effnet_train_and_learns(toy_task, tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    common = ["--phi", "-3", "--data", "digits", "--image-size", "16", "--seed", "0", "--quiet"]
    trained = run_cli("train", "--task", "digit_value", *common, "--epochs", "3", "--out", run, "--json").check()
    assert "val_mae" in json.loads(trained.stdout)
    untrained = tmp_path / "untrained"  # the same seeded model with a learning rate that moves nothing
    run_cli("train", "--task", "digit_value", *common, "--epochs", "1", "--lr", "1e-9", "--limit-train", "64",
            "--out", untrained).check()  # fmt: skip
    mae = {name: json.loads(run_cli("eval", "--weights", folder / "best.safetensors", "--json").check().stdout)["mae"]
           for name, folder in (("trained", run), ("untrained", untrained))}  # fmt: skip
    # digits 0-9: an untrained net's outputs sit near 0, about 4.5 off; three epochs learn the values
    assert mae["untrained"] > 3.0 and mae["trained"] < 0.6 * mae["untrained"], mae
