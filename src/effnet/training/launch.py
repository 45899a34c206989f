"""``train()``: one entry point for every task's runs (``cfg.task`` picks the trainer)."""

from __future__ import annotations

import os

from effnet.training.classify import ClassificationTrainer
from effnet.training.config import TrainConfig, flatten
from effnet.training.rundir import RunDir
from effnet.training.tasks import TaskRunTrainer


def trainer_class(task: str):
    """The run trainer of ``task``: classification's own (distillation, progressive learning), or
    the one every other registered task shares (its entry sets up data and model)."""
    return ClassificationTrainer if task == "classification" else TaskRunTrainer


def run_config(given: dict, run: str | os.PathLike, resume: bool) -> TrainConfig:
    """The settings of a run started or resumed from options (``effnet train``'s): resuming, the
    run's saved settings (RUN/config.json) fill in whatever is not given again."""
    rundir = RunDir(run)
    if resume and rundir.is_run():
        return TrainConfig.from_dict({**flatten(rundir.read_config(), str(rundir.config_path)), **given})
    return TrainConfig(**given)


def train(cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train per ``cfg`` into the directory ``run``; returns the last epoch's metrics row."""
    return trainer_class(cfg.task).run(cfg, run, resume=resume, quiet=quiet)
