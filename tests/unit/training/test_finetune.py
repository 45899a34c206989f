"""Fine-tuning pretrained weights (--finetune full|linear|freeze:K|bitfit|lora:R, --lr-decay): exactly the
tensors a mode trains move, the rest stay to the bit (BN statistics included), the optimizer holds
only what trains, resume stays bitwise, the saved file is a plain effnet file, and the run keeps the
weights' own preprocessing. A phi -4 model at 16 px on 64 digits: 4 steps a run."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import effnet
from effnet.training import ClassificationTrainer, TrainConfig
from effnet.training.config import FINETUNE_MODES
from effnet.weights.io import load, model_metadata, save
from tests.conftest import give_bn_real_statistics, run_cli

SIDE = 16
STAGES = 7  # B0's stages; phi -4 keeps all of them
# The weights' own preprocessing, on purpose not the B0 family's default (ImageNet mean/std, bicubic).
WEIGHTS_PRE = {"interpolation": "bilinear", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 'pretrained' effnet file: a small B0 with measured BN statistics and its own preprocessing."""
    torch.manual_seed(0)
    model = effnet.create_model(phi=-4, num_classes=10, resolution=SIDE)
    give_bn_real_statistics(model, SIDE)
    model.preprocessing = replace(model.preprocessing, **WEIGHTS_PRE)
    return save(model, tmp_path_factory.mktemp("w") / "pretrained.safetensors")


def config(weights, **overrides) -> TrainConfig:
    settings = dict(model=None, weights=str(weights), data="digits", image_size=SIDE, batch_size=16, limit_train=64,
                    epochs=1, ema_decay=0.9, warmup_epochs=0.0, lr=0.01)  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def trained(weights, run, **overrides):
    """(the trainer, last.safetensors, best.safetensors (the EMA's), the file it started from)."""
    trainer = ClassificationTrainer(config(weights, **overrides), run, quiet=True)
    trainer.fit()
    trainer.rundir.unlock()
    return (
        trainer,
        load_file(str(run / "last.safetensors")),
        load_file(str(run / "best.safetensors")),
        load_file(str(weights)),
    )


def moved(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def record_bn_modes(model) -> dict[str, list[bool]]:
    """The training flag of each BatchNorm at every forward call (the training steps)."""
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            seen[name] = []
            module.register_forward_pre_hook(lambda m, args, name=name: seen[name].append(m.training))
    return seen


def test_linear_probe_trains_the_classifier_alone_and_saves_a_plain_file(weights, tmp_path):
    trainer = ClassificationTrainer(config(weights, finetune="linear"), tmp_path / "run", quiet=True)
    model = trainer.model
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert held == {id(model.classifier.weight), id(model.classifier.bias)}
    assert not any(p.requires_grad for name, p in model.named_parameters() if not name.startswith("classifier."))
    hand = model.classifier.weight.numel() + model.classifier.bias.numel()
    assert trainer.finetune.trainable == hand and trainer.finetune.total == model.num_params()
    modes = record_bn_modes(model)
    trainer.fit()
    trainer.rundir.unlock()
    assert modes["stem.bn"] and not any(flag for flags in modes.values() for flag in flags)  # eval throughout

    start, run = load_file(str(weights)), tmp_path / "run"
    for name in ("last", "best"):  # the model, and the EMA: every backbone tensor (BN statistics too) to the bit
        saved = load_file(str(run / f"{name}.safetensors"))
        assert moved(start, saved) == {"classifier.weight", "classifier.bias"}, name

    # a plain effnet file: the model's tensors and metadata, the mode in its training record, nothing else
    fresh = load(run / "best.safetensors")
    assert all(p.requires_grad for p in fresh.parameters())
    with safe_open(str(run / "best.safetensors"), "pt") as f:
        assert set(f.keys()) == set(fresh.state_dict()) and set(f.metadata()) == {*model_metadata(fresh), "training"}
        assert json.loads(f.metadata()["training"])["finetune"] == "linear"
    row = trainer.rows[-1]
    assert (row["finetune"], row["trainable_params"], row["total_params"]) == ("linear", hand, model.num_params())


def test_freeze_k_leaves_exactly_the_stem_and_k_stages(weights, tmp_path):
    trainer, last, best, start = trained(weights, tmp_path / "run", finetune="freeze:2")
    kept = {k for k in start if k.startswith(("stem.", "stages.0.", "stages.1."))}
    assert moved(start, last) == moved(start, best) == set(start) - kept
    third = [n for n, _ in trainer.model.named_parameters() if n.startswith("stages.2.")]
    assert third and all(n in moved(start, last) for n in third)
    model = trainer.model
    frozen = [model.stem, model.stages[0], model.stages[1]]
    assert trainer.finetune.trainable == model.num_params() - sum(p.numel() for m in frozen for p in m.parameters())


def test_bitfit_trains_biases_norms_and_the_classifier(weights, tmp_path):
    run = tmp_path / "run"
    # --phi -4: the file's architecture (the command's --model defaults to B0)
    proc = run_cli("train", "--phi", -4, "--weights", weights, "--finetune", "bitfit", "--data", "digits",
                   "--image-size", SIDE, "--batch-size", 16, "--limit-train", 64, "--epochs", 1, "--lr", 0.01, "--json",
                   "--out", run)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    start, last = load_file(str(weights)), load_file(str(run / "last.safetensors"))
    model = load(weights)
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    norms = {f"{n}.{p}" for n in bns for p in ("weight", "bias")}
    trains = {
        n for n, _ in model.named_parameters() if n in norms or n.endswith(".bias") or n.startswith("classifier.")
    }
    frozen = {n for n, _ in model.named_parameters()} - trains
    assert frozen and all(n.endswith(".weight") and start[n].ndim == 4 for n in frozen)  # the conv weights
    changed = moved(start, last)
    assert not changed & frozen and {"classifier.weight", "stem.bn.bias", "stages.3.0.se.reduce.bias"} <= changed
    assert "stem.bn.running_mean" in changed  # BitFit's BN layers stay in train mode: statistics follow the data
    hand = sum(p.numel() for n, p in model.named_parameters() if n in trains)
    row = json.loads(proc.stdout)
    assert row["trainable_params"] == hand and row["trainable_pct"] == round(100 * hand / model.num_params(), 4)
    assert f"parameters: {hand:,} of {model.num_params():,} train" in proc.stderr
    assert "trainable_params" in (run / "metrics.csv").read_text().splitlines()[0]
    assert json.loads((run / "config.json").read_text())["model"]["finetune"] == "bitfit"


def test_lora_trains_low_rank_updates_of_the_1x1_convs_and_saves_them_merged(weights, tmp_path):
    trainer, last, best, start = trained(weights, tmp_path / "run", finetune="lora:2")
    model = trainer.model
    pointwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    factors = sum(2 * (m.in_channels + m.out_channels) for m in pointwise)
    plain = load(weights)
    bitfit = sum(p.numel() for n, p in plain.named_parameters() if n.startswith("classifier.") or p.ndim == 1)
    assert trainer.finetune.trainable == factors + bitfit and trainer.finetune.total == plain.num_params()
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}

    # the saved files are plain: the keys of the model without LoRA, every 1x1 conv's weight moved
    # (its update merged in), the stem's and the depthwise convs' weights to the bit
    assert set(last) == set(best) == set(start)
    convs = {k for k in start if start[k].ndim == 4}
    ones = {k for k in convs if start[k].shape[2:] == (1, 1) and not k.startswith("classifier.")}
    assert len(ones) == len(pointwise) and moved(start, last) & convs == ones
    assert not moved(start, best) & (convs - ones)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        saved = load(tmp_path / "run" / "last.safetensors").eval()
        torch.testing.assert_close(saved(x), model.eval()(x), rtol=1e-4, atol=1e-5)  # merged == parametrized


def test_lr_decay_gives_each_part_its_learning_rate(weights, tmp_path):
    trainer = ClassificationTrainer(config(weights, lr_decay=0.5, weight_decay=0.05), tmp_path / "run", quiet=True)
    trainer.rundir.unlock()
    model = trainer.model
    part_of = {id(p): n.split(".")[0] if not n.startswith("stages.") else ".".join(n.split(".")[:2])
               for n, p in model.named_parameters()}  # fmt: skip
    expected = {"classifier": 0.01, "head": 0.01, "stem": 0.01 * 0.5 ** (STAGES + 1),
                **{f"stages.{i}": 0.01 * 0.5 ** (STAGES - i) for i in range(STAGES)}}  # fmt: skip
    seen = set()
    for group in trainer.optimizer.param_groups:
        parts = {part_of[id(p)] for p in group["params"]}
        assert all(group["initial_lr"] == expected[part] for part in parts), (parts, group["initial_lr"])
        assert group["weight_decay"] == (0.05 if group["params"][0].ndim > 1 else 0.0)
        assert all((p.ndim > 1) == (group["params"][0].ndim > 1) for p in group["params"])
        seen |= {id(p) for p in group["params"]}
    assert seen == {id(p) for p in model.parameters()}
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 0.01  # the row's "lr" is the head's
    plain = ClassificationTrainer(config(weights), tmp_path / "plain", quiet=True)
    plain.rundir.unlock()
    assert len(plain.optimizer.param_groups) == 2  # without decay, the groups a resume state of before holds


def test_the_weights_preprocessing_is_kept_for_training_and_evaluation(weights, tmp_path):
    trainer, *_ = trained(weights, tmp_path / "run", finetune="linear")
    batched = trainer.train_set  # digits in memory: the batched pipeline normalizes
    assert (tuple(batched.mean), tuple(batched.std)) == (WEIGHTS_PRE["mean"], WEIGHTS_PRE["std"])
    assert batched.interpolation.value == "bilinear"
    per_image = ClassificationTrainer(config(weights, finetune="linear", pipeline="per-image"), tmp_path / "p",
                                      quiet=True)  # fmt: skip
    per_image.rundir.unlock()
    normalize = per_image.train_set.base.transform.transforms[-1]
    assert (tuple(normalize.mean), tuple(normalize.std)) == (WEIGHTS_PRE["mean"], WEIGHTS_PRE["std"])
    evaluate = trainer.val_set.transform.transforms
    assert evaluate[2].interpolation.value == "bilinear" and tuple(evaluate[-1].mean) == WEIGHTS_PRE["mean"]
    saved = load(tmp_path / "run" / "best.safetensors").preprocessing  # what eval and predict will use
    assert (saved.interpolation, saved.mean, saved.std) == tuple(WEIGHTS_PRE.values())


def test_fine_tuning_lite0_normalises_to_minus_one_one(tmp_path):
    trainer = ClassificationTrainer(TrainConfig(model=None, weights="lite0", finetune="linear", data="digits",
                                                image_size=SIDE, limit_train=64, epochs=1), tmp_path / "run",
                                    quiet=True)  # fmt: skip
    trainer.rundir.unlock()
    assert tuple(trainer.train_set.mean) == tuple(trainer.train_set.std) == (0.5, 0.5, 0.5)
    assert trainer.model.preprocessing.mean == trainer.model.preprocessing.std == (0.5, 0.5, 0.5)


class Interrupt(Exception):
    pass


class CrashAt:
    """The batched training images, with a crash at the ``at``-th batch read (a kill, mid-epoch)."""

    def __init__(self, base, at: int):
        self.base, self.at, self.reads = base, at, 0

    def __len__(self):
        return len(self.base)

    def batch(self, indices, generator):
        self.reads += 1
        if self.reads == self.at:
            raise Interrupt
        return self.base.batch(indices, generator)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["freeze:3", "lora:2"])
def test_resume_with_frozen_stages_is_bitwise(weights, tmp_path, mode):
    settings = dict(finetune=mode, lr_decay=0.7, epochs=2, checkpoint_every=1)
    _, last, best, _ = trained(weights, tmp_path / "straight", **settings)

    broken = ClassificationTrainer(config(weights, **settings), tmp_path / "resumed", quiet=True)
    broken.train_set = CrashAt(broken.train_set, at=6)  # in the 2nd epoch's 2nd step of 4
    with pytest.raises(Interrupt):
        broken.fit()
    broken.rundir.unlock()
    resumed = ClassificationTrainer(config(weights, **settings), tmp_path / "resumed", resume=True, quiet=True)
    assert (resumed.epoch, resumed.step_in_epoch) == (1, 1)
    held = {id(p) for group in resumed.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in resumed.model.parameters() if p.requires_grad} != set()
    frozen = mode.startswith("freeze")
    assert any(p.requires_grad for p in resumed.model.stages[2].parameters()) != frozen
    modes = record_bn_modes(resumed.model)
    resumed.fit()
    resumed.rundir.unlock()
    assert modes["stages.2.0.dw_bn"] and all(modes["stages.2.0.dw_bn"]) != frozen  # frozen: eval mode after resume
    assert modes["stages.3.0.dw_bn"] and all(modes["stages.3.0.dw_bn"])
    for name, straight in (("last", last), ("best", best)):
        again = load_file(str(tmp_path / "resumed" / f"{name}.safetensors"))
        assert not moved(straight, again), name


def test_finetune_modes_apply_to_a_task_models_trunk(weights, tmp_path):
    """An embedder fine-tuned from a classifier's file: --finetune linear freezes its trunk (BN
    statistics included); the embedding layers and ArcFace's class centres train."""
    from effnet.training.tasks import TaskRunTrainer

    rng = np.random.default_rng(0)
    for k in range(3):
        (tmp_path / "people" / f"p{k}").mkdir(parents=True)
        for n in range(8):
            pixels = np.clip(rng.normal(60 + 70 * k, 20, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "people" / f"p{k}" / f"{n}.png")
    cfg = config(weights, task="embedding", data=str(tmp_path / "people"), batch_size=8, limit_train=None,
                 finetune="linear")  # fmt: skip
    trainer = TaskRunTrainer(cfg, tmp_path / "run", quiet=True)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    trainer.rundir.unlock()
    start, last = load_file(str(weights)), load_file(str(tmp_path / "run" / "last.safetensors"))
    trunk = {k for k in last if k.startswith("trunk.")}
    assert trunk and all(torch.equal(last[k], start[k.removeprefix("trunk.")]) for k in trunk)
    assert {"bn.weight", "bn.running_mean", "fc.weight", "margin.weight"} <= moved(before, last)
    assert trainer.finetune.trainable == sum(p.numel() for n, p in trainer.model.named_parameters()
                                             if not n.startswith("trunk."))  # fmt: skip


def test_bad_finetune_settings_are_one_line_and_write_nothing(weights, tmp_path):
    common = ["--phi", -4, "--data", "digits", "--image-size", SIDE, "--limit-train", 64, "--epochs", 1, "--quiet"]
    cases = [
        (["--finetune", "linear"], "--finetune linear trains part of a pretrained model: give --weights"),
        (["--weights", weights, "--finetune", "adapter"], f"--finetune must be one of {', '.join(FINETUNE_MODES)}"),
        (["--weights", weights, "--finetune", "lora:0"], "got 'lora:0'"),
        (["--weights", weights, "--finetune", "freeze:8"], "the trunk has 7 stages, so K must be 0 to 7"),
        (["--weights", weights, "--finetune", "freeze:-1"], "got 'freeze:-1'"),
        (["--weights", weights, "--lr-decay", "0"], "--lr-decay=0.0 is out of range"),
        (["--weights", weights, "--finetune", "linear", "--lr-decay", "0.7"], "nothing to decay"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        proc = run_cli("train", *common, *args, "--out", out)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists(), args
