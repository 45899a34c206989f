"""Runs of every task but classification on the trainer core: the task's registry entry loads its
data and builds its model on an EfficientNet trunk (from ``--model``/``--phi``, or the trunk of
``--weights``: a pretrained tag, a classifier or a model of the same task) and its ``Task``; a
task registered with ``effnet.register_task`` trains the same way. Resume, DDP, EMA, run
directories and reports are the core's, exactly as for classification."""

from __future__ import annotations

import torch

from effnet.tasks.registry import get_task
from effnet.training.config import TrainConfig
from effnet.training.run import RunTrainer, resolve_for_run
from effnet.training.sampling import SeededAugment
from effnet.training.source import WeightsSource, trunk_of
from effnet.training.trainer import Trainer, plan_steps


class TaskRunTrainer(RunTrainer):
    """A run of ``cfg.task``, set up by its registry entry (``training_data``, ``training_setup``)."""

    def _set_up(self, cfg: TrainConfig, rundir, ranks, device, resume: bool, quiet: bool) -> None:
        torch.manual_seed(cfg.seed)
        entry = get_task(cfg.task)
        self.data = entry.training_data(cfg)
        plan = plan_steps(len(self.data.split("train")), ranks.world, cfg.batch_size, cfg.accum_steps)
        cfg = resolve_for_run(cfg, rundir, plan, resume)
        source = WeightsSource(cfg)
        continuing = source.model if source.whole_fits(self.data.classes) else None
        model, task, train_set, val_set = entry.training_setup(cfg, self.data, source.architecture(cfg), continuing)
        model = source.load_into(model).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        trunk_of(model).set_memory_efficient(cfg.memory_efficient)
        Trainer.__init__(self, cfg, rundir, task=task, model=model, train_set=SeededAugment(train_set, cfg.seed),
                         val_set=val_set, plan=plan, ranks=ranks, device=device, resume=resume,
                         quiet=quiet)  # fmt: skip
