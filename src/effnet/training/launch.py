"""``train()``: one entry point for every task's runs (``cfg.task`` picks the trainer)."""

from __future__ import annotations

import os

from effnet.training.classify import ClassificationTrainer
from effnet.training.config import TrainConfig
from effnet.training.tasks import TASK_TRAINERS


def train(cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train per ``cfg`` into the directory ``run``; returns the last epoch's metrics row."""
    trainer = TASK_TRAINERS.get(cfg.task, ClassificationTrainer)
    return trainer.run(cfg, run, resume=resume, quiet=quiet)
