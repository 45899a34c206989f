"""A trainer that owns its run: the process group, the device, the run directory (checked and
locked, removed again if set-up fails) and the settings resolved for the run's length. Each task's
trainer (classification, detection, segmentation, embedding) fills in ``_set_up``."""

from __future__ import annotations

import os
import warnings

import torch

from effnet.core.errors import EffnetWarning, UsageError
from effnet.training.config import TrainConfig
from effnet.training.distributed import resolve_device, setup_distributed, shutdown
from effnet.training.rundir import RunDir
from effnet.training.trainer import StepPlan, Trainer


def resolve_for_run(cfg: TrainConfig, rundir: RunDir, plan: StepPlan, resume: bool) -> TrainConfig:
    """``cfg`` with the recipe's settings filled in for this many steps; a resumed run must ask for
    what its RUN/config.json holds, resolved the same way (a run from before a setting existed
    gets its default, and one from before recipes resolves to the same values)."""
    cfg = cfg.resolved(plan.steps_per_epoch, plan.global_batch)
    if resume:
        saved = TrainConfig.from_dict(rundir.read_config()).resolved(plan.steps_per_epoch, plan.global_batch)
        saved, wanted = saved.to_dict(), cfg.to_dict()
        if saved != wanted:
            diff = sorted(k for k in saved if saved[k] != wanted[k])
            raise UsageError(f"--resume with settings that differ from {rundir.config_path}: {', '.join(diff)}")
    return cfg


class RunTrainer(Trainer):
    """Sets up distribution, device and run directory, then calls ``_set_up``, which builds the
    data, model and task and ends by calling ``Trainer.__init__``."""

    def __init__(self, cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False):
        ranks = setup_distributed()
        device = resolve_device(cfg.device, ranks.local_rank)
        rundir = RunDir(run)
        if resume and rundir.never_checkpointed():  # decided on every rank before any of them writes
            if ranks.main:
                warnings.warn(f"{rundir.path} never reached its first checkpoint (no state.pt): starting it from "
                              "scratch", EffnetWarning, stacklevel=2)  # fmt: skip
            resume = False
        if ranks.main:
            rundir.check(resume)
            rundir.lock()
        try:
            self._set_up(cfg, rundir, ranks, device, resume, quiet)
        except BaseException:
            rundir.abandon()
            raise

    def _set_up(self, cfg: TrainConfig, rundir: RunDir, ranks, device: torch.device, resume: bool, quiet: bool):
        raise NotImplementedError

    @classmethod
    def run(cls, cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False) -> dict:
        """Train per ``cfg`` into the directory ``run``; returns the last epoch's metrics row."""
        trainer = None
        try:
            trainer = cls(cfg, run, resume=resume, quiet=quiet)
            return trainer.fit()
        finally:
            if trainer is not None:
                trainer.rundir.unlock()
            shutdown()
