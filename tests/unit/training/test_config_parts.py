"""TrainConfig in parts (model, data, task, recipe, runtime): RUN/config.json and `effnet train
--config FILE` hold them nested, the flags keep their flat names, fit's Recipe and Runtime are
two of the parts."""

import dataclasses
import json

import pytest

from effnet.training.config import PARTS, TrainConfig
from effnet.training.fit import Recipe, Runtime
from tests.conftest import run_cli


def test_the_parts_partition_every_setting_and_fit_takes_two_of_them():
    names = [name for part in PARTS.values() for name in part]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(TrainConfig))  # each field once
    assert len(names) == len(set(names))
    assert tuple(f.name for f in dataclasses.fields(Recipe)) == PARTS["recipe"]
    assert tuple(f.name for f in dataclasses.fields(Runtime)) == PARTS["runtime"]


def test_nested_and_flat_settings_give_the_same_config():
    cfg = TrainConfig(phi=-3, model=None, data="digits", epochs=3, lr=0.01, channels_last=True, label_smoothing=0.2)
    nested = cfg.to_dict(nested=True)
    assert set(nested) == set(PARTS) and nested["recipe"]["lr"] == 0.01 and nested["task"]["label_smoothing"] == 0.2
    assert TrainConfig.from_dict(nested) == TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_train_from_a_config_file_with_a_flag_over_it(tmp_path):
    settings = {
        "model": {"model": None, "phi": -3, "image_size": 16},
        "data": {"data": "digits", "limit_train": 64},
        "recipe": {"epochs": 1, "batch_size": 16, "lr": 0.002, "seed": 3},
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    run = tmp_path / "run"
    run_cli("train", "--config", path, "--seed", "5", "--quiet", "--out", run).check()
    saved = json.loads((run / "config.json").read_text())
    assert set(saved) == set(PARTS)
    assert saved["model"]["phi"] == -3 and saved["data"]["limit_train"] == 64 and saved["recipe"]["lr"] == 0.002
    assert saved["recipe"]["seed"] == 5  # the flag wins over the file
    # resumed from its own nested config.json, nothing repeated; a setting given anew must match it
    assert run_cli("train", "--resume", "--quiet", "--out", run).returncode == 0
    changed = run_cli("train", "--resume", "--epochs", "2", "--quiet", "--out", run)
    assert changed.returncode == 2 and "differ" in changed.stderr and "epochs" in changed.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"recipe": {"lr": 0.1}, "model": {"dropout": 0.1, "lr": 1}}',
            "model.lr is not a setting of 'model' (it belongs to 'recipe')",
        ),
        ('{"recipe": {"lr": 0.1}, "optimiser": {"lr": 1}}', "'optimiser' is not one of the parts"),
        ('{"lr": 0.1, "learning_rate": 1}', "unknown settings learning_rate"),
        ("[1, 2]", "not a JSON object"),
        ('{"lr": 0.1,', "not a readable JSON file"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = run_cli("train", "--config", path, "--phi", "-3", "--out", tmp_path / "run")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert str(path) in result.stderr and not (tmp_path / "run").exists()


def test_run_config_merges_a_resumed_runs_settings_under_the_given_ones(tmp_path):
    from effnet.training.launch import run_config
    from effnet.training.rundir import RunDir

    run = tmp_path / "run"
    assert run_config({"phi": -3, "model": None, "epochs": 4}, run, resume=True).epochs == 4  # no run yet
    saved = TrainConfig(phi=-3, model=None, data="digits", epochs=3, lr=0.01)
    RunDir(run).path.mkdir()
    RunDir(run).write_config(saved.to_dict(nested=True))
    assert run_config({}, run, resume=True) == saved  # nothing repeated: the run's own settings
    merged = run_config({"epochs": 5}, run, resume=True)
    assert merged.epochs == 5 and merged.lr == 0.01 and merged.phi == -3
    assert run_config({"phi": -2, "model": None}, run, resume=False).epochs == TrainConfig.epochs  # a new run
