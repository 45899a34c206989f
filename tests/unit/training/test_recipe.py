"""The recipe a run gets when it sets nothing: the paper's for ImageNet-length runs, the short one
otherwise, and the short one learns (benchmarks/short_recipe.md)."""

import json
from dataclasses import fields

import pytest

from effnet.training.config import (
    LIGHT_AUGMENT_MIN_EPOCHS,
    PAPER,
    PAPER_MIN_STEPS,
    SHORT,
    TrainConfig,
    ema_for_steps,
)

RECIPE_FIELDS = [k for k in PAPER if k != "lr_per_256"]


def effnet(capsys, *args) -> str:
    """``effnet ARGS`` in this process (a subprocess would import torch again); its stdout."""
    from effnet.cli.main import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_defaults_learn_digits(tmp_path, capsys):
    """Only the model, data, size and epochs given: far above the 10% of chance and of the same
    model untrained (measured 92% against 10%, 20 s on one core)."""
    run = tmp_path / "run"
    effnet(capsys, "train", "--phi", "-3", "--data", "digits", "--image-size", "32", "--epochs", "2", "--quiet",
           "--out", run)  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"]["recipe"] == "short" and cfg["recipe"]["opt"] == "adamw"  # grouped by part
    result = json.loads(effnet(capsys, "eval", "--weights", run / "best.safetensors", "--split", "test", "--json"))
    # The same model, freshly initialised, through the same evaluation: what learning is measured against.
    import effnet as library

    untrained = library.open(run / "best.safetensors")
    untrained.load_state_dict(library.create_model(phi=-3, num_classes=10, resolution=32).state_dict())
    library.save(untrained, tmp_path / "untrained.safetensors")
    before = json.loads(effnet(capsys, "eval", "--weights", tmp_path / "untrained.safetensors", "--data", "digits",
                               "--split", "test", "--json"))  # fmt: skip
    assert before["top1"] <= 0.2, before["top1"]  # chance is 0.1
    assert result["top1"] >= before["top1"] + 0.6, (before["top1"], result["top1"])


def test_paper_values_are_the_papers():
    assert PAPER == dict(opt="rmsproptf", lr_per_256=0.016, sched="step", warmup_epochs=5.0, weight_decay=1e-5,
                         augment="paper", ema_decay=0.9999, drop_path_rate=0.2, bn_momentum=0.01)  # fmt: skip
    assert set(SHORT) == set(PAPER)


def test_auto_picks_paper_from_paper_min_steps():
    cfg = TrainConfig(epochs=10)
    steps = PAPER_MIN_STEPS // 10
    paper = cfg.resolved(steps, 4096)
    assert paper.recipe == "paper"
    assert {k: getattr(paper, k) for k in RECIPE_FIELDS} == {k: PAPER[k] for k in RECIPE_FIELDS}
    assert paper.lr == pytest.approx(0.016 * 4096 / 256)

    short = cfg.resolved(steps - 1, 64)  # one step per epoch fewer: 10 steps short of the threshold
    assert short.recipe == "short"
    expected = {k: SHORT[k] for k in RECIPE_FIELDS if k not in ("ema_decay", "augment")}
    assert {k: getattr(short, k) for k in expected} == expected
    assert short.ema_decay == ema_for_steps(10 * (steps - 1))
    assert short.augment == "light"  # 10 epochs: long enough to overfit without it
    assert TrainConfig(epochs=LIGHT_AUGMENT_MIN_EPOCHS - 1).resolved(100, 64).augment == "none"
    assert short.lr == pytest.approx(4e-3)  # 0.016 per 256 images at batch 64


@pytest.mark.parametrize("recipe", ["paper", "short"])
def test_explicit_recipe_wins_over_auto(recipe):
    for steps in (1, PAPER_MIN_STEPS):
        assert TrainConfig(epochs=1, recipe=recipe).resolved(steps, 64).recipe == recipe


@pytest.mark.parametrize("steps", [20, PAPER_MIN_STEPS])
def test_explicit_settings_are_never_overridden(steps):
    given = dict(opt="sgd", lr=0.05, sched="step", warmup_epochs=0.0, weight_decay=0.0, augment="light",
                 ema_decay=0.0, drop_path_rate=0.1, bn_momentum=0.05)  # fmt: skip
    cfg = TrainConfig(epochs=1, **given).resolved(steps, 64)
    assert {k: getattr(cfg, k) for k in given} == given


def test_another_optimizer_gets_its_own_lr():
    """--opt sgd with the short recipe: SGD's 0.1 per 256 images, not AdamW's."""
    cfg = TrainConfig(epochs=1, opt="sgd").resolved(20, 128)
    assert cfg.recipe == "short" and cfg.lr == pytest.approx(0.05)


@pytest.mark.parametrize("steps", [10, 500, 5000, PAPER_MIN_STEPS])
def test_resolving_twice_changes_nothing(steps):
    once = TrainConfig(epochs=2).resolved(steps, 64)
    assert all(getattr(once, f.name) is not None for f in fields(once) if f.name in RECIPE_FIELDS + ["lr"])
    # The second call sees another run length: the settings it would derive must not replace the first's.
    assert once.resolved(steps, 64) == once
    assert once.resolved(steps * 3, 256) == once
    assert TrainConfig.from_dict(json.loads(json.dumps(once.to_dict()))).resolved(steps, 64) == once


def test_ema_for_steps():
    assert ema_for_steps(0) == ema_for_steps(99) == 0.0  # nothing worth averaging
    assert ema_for_steps(100) == pytest.approx(0.9)  # horizon 1 / (1 - decay) = 10 steps
    assert ema_for_steps(1000) == pytest.approx(0.99)
    assert ema_for_steps(10**7) == 0.9999  # never longer than the paper's
    horizons = [1 / (1 - ema_for_steps(n)) for n in (100, 250, 4000, 50_000)]
    assert horizons == pytest.approx([10, 25, 400, 5000])  # a tenth of the run
