"""``effnet.fit``: the trainer core for the user's own module and datasets (real digits), with the
run folder, bitwise resume and callbacks that ``effnet train`` has."""

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import effnet
from effnet.datasets.loading import ImageDataset, load_data
from effnet.tasks.classification import ClassificationTask
from effnet.training.fit import Recipe, Runtime, fit

SIDE = 16


class TinyNet(nn.Module):
    """Not an EfficientNet: what a user brings."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, classes),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x)


def digits(augment: bool):
    data = load_data("digits")
    plain = [v2.ToImage(), v2.Resize(SIDE), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    train = v2.Compose([v2.RandomAffine(degrees=10, translate=(0.1, 0.1)), *plain] if augment else plain)
    return ImageDataset(data.split("train"), train), ImageDataset(data.split("val"), v2.Compose(plain))


def accuracy(model, dataset) -> float:
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=256)
    with torch.no_grad():
        hits = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    return hits / len(dataset)


@pytest.mark.slow
def test_fit_trains_a_users_own_module_and_it_learns():
    torch.manual_seed(0)
    train, val = digits(augment=False)
    model = TinyNet()
    before = accuracy(model, val)
    rows = []
    result = fit(model, ClassificationTask(10), train, val, Recipe(epochs=4, batch_size=32, lr=1e-2, ema_decay=0.0),
                 callbacks=[rows.append])  # fmt: skip
    assert result.model is model and result.run_dir is None
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] == [r["epoch"] for r in result.history]
    after = accuracy(model, val)
    # chance is 10%; the untrained net sits near it, four epochs of 1,437 digits take it far above
    assert before < 0.3 and after >= 0.8, (before, after)
    assert result.best_score == pytest.approx(after, abs=1e-6)  # the model holds the best epoch's weights


@pytest.mark.slow
def test_fit_resumes_bitwise_after_an_interruption(tmp_path):
    train, val = digits(augment=True)
    recipe = Recipe(epochs=2, batch_size=64, lr=3e-3, ema_decay=0.9)

    torch.manual_seed(0)
    straight = fit(TinyNet(), ClassificationTask(10), train, val, recipe, tmp_path / "straight").model

    class Stop(Exception):
        pass

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Stop

    torch.manual_seed(0)
    with pytest.raises(Stop):
        fit(TinyNet(), ClassificationTask(10), train, val, recipe, tmp_path / "resumed", callbacks=[stop_after_first])
    torch.manual_seed(123)  # the fresh module's own init must not matter: the run's state decides
    resumed = fit(TinyNet(), ClassificationTask(10), train, val, recipe, tmp_path / "resumed", resume=True)
    assert len(resumed.history) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a different recipe on resume is refused, naming the setting
    with pytest.raises(effnet.UsageError, match="lr"):
        fit(TinyNet(), ClassificationTask(10), train, val, Recipe(epochs=2, batch_size=64, lr=1e-3, ema_decay=0.9),
            tmp_path / "resumed", resume=True)  # fmt: skip
    # a task's name needs a model that says how many classes it predicts
    with pytest.raises(effnet.UsageError, match="ClassificationTask"):
        fit(TinyNet(), "classification", train, val, recipe)


@pytest.mark.slow
def test_fit_on_an_effnet_model_writes_files_effnet_opens(tmp_path):
    data = load_data("digits")
    model = effnet.create_model(phi=-3, num_classes=10, resolution=32, class_names=data.classes)
    pre = model.preprocessing
    train = ImageDataset(data.split("train"), pre.transform())
    val = ImageDataset(data.split("val"), pre.transform())
    result = fit(model, "classification", train, val, Recipe(epochs=1, batch_size=64), tmp_path / "run",
                 runtime=Runtime(channels_last=True))  # fmt: skip
    opened = effnet.open(tmp_path / "run" / "best.safetensors")
    assert opened.task == "classification" and opened.class_names == data.classes
    assert opened.provenance.training["data"] == "(fit)" and opened.provenance.training["epochs"] == 1
    for name, value in opened.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name].cpu()), name
