"""Training: resume after kill -9 to the bit, the non-finite path, bad images, torchrun."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import effnet
from effnet.training import ClassificationTrainer as Trainer
from effnet.training import TrainConfig, TrainingError
from effnet.training.trainer import _bn_buffers
from effnet.weights.io import load
from effnet.weights.pretrained import load_pretrained
from tests.conftest import free_port, run_cli

# A small compound-scaled B0 on digits at 24 px (the digits are 8x8): ~2 s an epoch on one core.
TINY = ["--phi", "-3", "--data", "digits", "--image-size", "24", "--batch-size", "32", "--limit-train", "640",
        "--augment", "paper", "--ema-decay", "0.99", "--bn-momentum", "0.1", "--seed", "7"]  # fmt: skip


def effnet_cmd(*args):
    return [sys.executable, "-m", "effnet", *map(str, args)]


def tensors(path):
    return load_file(str(path))


def assert_bitwise_equal(a: Path, b: Path):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"


def read_state(run: Path):
    try:
        return torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    except Exception:
        return None


# Progressive learning (EfficientNetV2): 3 stages of one epoch, image size 16 -> 20 -> 24 with
# dropout and RandAugment rising alike, random erasing throughout; the last stage is the evaluation size.
PROGRESSIVE = ["--progressive", "3", "--start-size", "16", "--start-dropout", "0.1", "--dropout", "0.3",
               "--start-randaug", "3", "--randaug", "9", "--random-erase", "0.5"]  # fmt: skip


@pytest.mark.slow
def test_resume_after_kill_is_bitwise_identical(tmp_path):
    # Killed in the second stage: the resumed process must find the stage it was in and move
    # on to the third itself, to the bit.
    # 288 images: 9 steps an epoch, enough for a kill after the checkpoint at step 6 of epoch 2
    args = [*TINY, *PROGRESSIVE, "--limit-train", "288", "--epochs", "3", "--checkpoint-every", "2", "--quiet"]
    # Real processes throughout: the resumed run must equal a fresh process's run to the bit.
    subprocess.run(effnet_cmd("train", *args, "--out", tmp_path / "a"), check=True, timeout=300)

    run_b = tmp_path / "b"
    proc = subprocess.Popen(effnet_cmd("train", *args, "--out", run_b))
    deadline = time.monotonic() + 240
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        state = read_state(run_b) if (run_b / "state.pt").exists() else None
        # Kill mid-epoch, a few checkpoints into the second epoch (stage).
        if state and state["epoch"] == 1 and state["step_in_epoch"] >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = state["step_in_epoch"]
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, "the run finished before it could be killed mid-epoch"
    # the header and epoch 1, or epoch 2's row too when the kill landed between that row and the
    # epoch's checkpoint (the resumed run rewrites metrics.csv from its state: checked below)
    assert len((run_b / "metrics.csv").read_text().splitlines()) in (2, 3)

    subprocess.run(effnet_cmd("train", *args, "--out", run_b, "--resume"), check=True, timeout=300)
    assert_bitwise_equal(tmp_path / "a" / "last.safetensors", run_b / "last.safetensors")
    assert_bitwise_equal(tmp_path / "a" / "best.safetensors", run_b / "best.safetensors")
    rows_a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    rows_b = (run_b / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:8] for r in rows_a] == [r.split(",")[:8] for r in rows_b]
    # Every epoch records its stage; the size and regularization rise linearly to the end values.
    stages = [{k: row[k] for k in ("stage_index", "image_size", "dropout", "randaug")}
              for row in csv.DictReader(io.StringIO("\n".join(rows_b)))]  # fmt: skip
    assert stages == [
        {"stage_index": "0", "image_size": "16", "dropout": "0.1", "randaug": "3"},
        {"stage_index": "1", "image_size": "20", "dropout": "0.2", "randaug": "6"},
        {"stage_index": "2", "image_size": "24", "dropout": "0.3", "randaug": "9"},
    ]


@pytest.mark.slow
def test_run_directory_contents_and_eval(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", *TINY, "--epochs", "1", "--out", run, "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["epoch"] == 1 and row["step"] == 20
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.csv", "best.safetensors", "last.safetensors", "curves.png", "state.pt"} <= names
    assert any((run / "tensorboard").iterdir())
    assert json.loads((run / "config.json").read_text())["recipe"]["seed"] == 7
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]

    model = load(run / "best.safetensors")
    assert model.class_names == [str(i) for i in range(10)] and model.preprocessing.resolution == 24

    plot = tmp_path / "confusion.png"
    out = run_cli("eval", "--weights", run / "best.safetensors", "--split", "val", "--json", "--plot", plot)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"top1", "top5", "per_class", "n"}
    assert result["n"] == 144 and len(result["per_class"]) == 10
    assert result["top1"] == pytest.approx(float((run / "metrics.csv").read_text().splitlines()[1].split(",")[6]))
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_existing_run_is_not_overwritten_and_resume_checks_settings(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "state.pt").write_bytes(b"a run's resume state")  # without one, a start restarts the run
    proc = run_cli("train", *TINY, "--out", run)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (run / "config.json").read_text() == "{}"
    proc = run_cli("train", *TINY, "--out", tmp_path / "none", "--resume")
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


def small_trainer(tmp_path, **overrides) -> Trainer:
    cfg = dict(
        model=None,
        phi=-3,
        data="digits",
        image_size=32,
        batch_size=16,
        limit_train=160,
        epochs=1,
        ema_decay=0.99,
        bn_momentum=0.1,
    )
    return Trainer(TrainConfig(**{**cfg, **overrides}), tmp_path / "run", quiet=True)


def test_non_finite_loss_skips_the_step_untouched(tmp_path):
    trainer = small_trainer(tmp_path, opt="rmsproptf")  # its square_avg state is checked below
    images = torch.randn(16, 3, 32, 32)
    labels = torch.randint(0, 10, (16,))
    assert trainer._train_step([(images, labels)]) is not None  # a real step first
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    bn_before = [b.clone() for b in _bn_buffers(trainer.model)]
    opt_before = trainer.optimizer.state_dict()["state"][0]["square_avg"].clone()
    step_before = trainer.scheduler.last_epoch

    images[3, 0, 5, 5] = float("nan")
    assert trainer._train_step([(images, labels)]) is None
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(_bn_buffers(trainer.model), bn_before, strict=True))
    assert all(torch.equal(v, ema_before[k]) for k, v in trainer.ema.state_dict().items())
    assert torch.equal(trainer.optimizer.state_dict()["state"][0]["square_avg"], opt_before)
    assert trainer.scheduler.last_epoch == step_before


class PoisonedImages(torch.utils.data.Dataset):
    """A real dataset whose images all contain a NaN, as a corrupted decoder might produce."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        image = image.clone()
        image[0, 0, 0] = float("nan")
        return image, label


def test_ten_non_finite_steps_in_a_row_stop_the_run(tmp_path):
    trainer = small_trainer(tmp_path, pipeline="per-image")
    trainer.train_set.base = PoisonedImages(trainer.train_set.base)
    with pytest.raises(TrainingError, match="10 steps in a row"):
        trainer.fit()
    assert trainer.skipped_steps == 10
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_an_epoch_whose_every_step_was_non_finite_is_never_best(tmp_path):
    trainer = small_trainer(tmp_path, limit_train=64, epochs=2, pipeline="per-image")  # 4 steps an epoch
    trainer.train_set.base = PoisonedImages(trainer.train_set.base)
    trainer.fit()
    assert trainer.skipped_steps == 8 and [r["skipped_steps"] for r in trainer.rows] == [4, 8]
    assert not (tmp_path / "run" / "best.safetensors").exists()
    assert (tmp_path / "run" / "last.safetensors").exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = small_trainer(tmp_path)
    with torch.no_grad():
        trainer.model.classifier.weight[0, 0] = float("inf")
    with pytest.raises(TrainingError, match="non-finite"):
        trainer._save_weights("last.safetensors", trainer.model)
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_bad_images_stop_training_or_are_skipped(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (20, 20), (200 * (c == "a"), 8 * i, 0)).save(data / c / f"{i}.png")
    (data / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = ["--phi", "-4"]
    common = [*args, "--data", data, "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--quiet"]
    proc = run_cli("train", *common, "--out", tmp_path / "r1")
    assert proc.returncode == 2 and "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r1").exists(), "a run that failed to start leaves nothing behind"
    proc = run_cli("train", *common, "--bad-images", "skip", "--out", tmp_path / "r2")
    assert proc.returncode == 0, proc.stderr
    assert "skipping 1 unusable images" in proc.stderr
    skipped = json.loads((tmp_path / "r2" / "skipped_images.json").read_text())
    assert [Path(s["path"]).name for s in skipped] == ["broken.png"]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "effnet", "train", *TINY, "--epochs", "1", "--out", run, "--quiet", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout)
    assert row["step"] == 10  # 640 images / 2 processes / batch 32
    assert len(list((run / "tensorboard").iterdir())) == 1  # only rank 0 writes
    assert load(run / "last.safetensors").config.num_classes == 10


def test_fine_tuning_starts_from_pretrained_weights(tmp_path):
    trainer = small_trainer(tmp_path, model="efficientnet_lite0", phi=None, weights="lite0", drop_path_rate=0.0)
    pretrained = load_pretrained("lite0").state_dict()
    own = trainer.model.state_dict()
    assert torch.equal(own["stages.3.1.dw_conv.weight"], pretrained["stages.3.1.dw_conv.weight"])
    assert own["classifier.weight"].shape == (10, 1280)  # digits has 10 classes, not 1000
    assert trainer.model.config.padding == "same"  # as the TF-trained weights need
    with pytest.raises(effnet.WeightsError, match="does not match efficientnet_b0; missing: .*se.reduce"):
        small_trainer(tmp_path / "other", model="efficientnet_b0", phi=None, weights="lite0")


def test_a_run_saved_before_recipes_resumes(tmp_path):
    """RUN/config.json from before --recipe existed (flat, as every run before the parts; every setting
    explicit, no "recipe" key)."""
    run = tmp_path / "run"
    args = ["train", "--phi", "-3", "--data", "digits", "--image-size", "16", "--limit-train", "64",
            "--batch-size", "16", "--epochs", "1", "--quiet", "--out", run]  # fmt: skip
    run_cli(*args).check()
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text())).to_dict()
    del saved["recipe"]
    (run / "config.json").write_text(json.dumps(saved))
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
