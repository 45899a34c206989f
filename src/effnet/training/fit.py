"""``fit()``: the trainer core as a library, for the user's own ``nn.Module`` and ``Dataset``.

``effnet train`` builds its model and data from a flat ``TrainConfig`` (what the CLI and a run's
``config.json`` hold); ``fit`` takes them ready-made, as timm and Lightning users expect, and
keeps everything the core gives a run: the run folder with bitwise resume, EMA, DDP under
torchrun, the fault handling and the reports. Its settings come in two parts, ``Recipe`` (how to
optimise) and ``Runtime`` (where and how to compute), whose fields are the ``TrainConfig`` fields
of the same names.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.tasks.registry import get_task, task_names
from effnet.training.config import TrainConfig
from effnet.training.distributed import shutdown
from effnet.training.run import RunTrainer, resolve_for_run
from effnet.training.sampling import SeededAugment
from effnet.training.trainer import Trainer, plan_steps


@dataclass(frozen=True)
class Recipe:
    """How to optimise; settings left at None come from the named ``recipe`` ("short": AdamW and
    cosine, for runs of minutes to hours; "paper": the paper's RMSProp recipe; "auto": by length),
    as for ``effnet train``."""

    epochs: int = 10
    batch_size: int = 64  # per process
    recipe: str = "short"
    opt: str | None = None
    lr: float | None = None
    lr_decay: float = 1.0  # layer-wise lr decay over an EfficientNet's parts (stem, stages, head); 1: off
    sched: str | None = None
    warmup_epochs: float | None = None
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    weight_decay: float | None = None
    ema_decay: float | None = None  # 0 disables the weight EMA
    clip_grad: float | None = None
    accum_steps: int = 1
    seed: int = 0
    precision: str = "auto"  # auto (the fastest here: effnet.training.precision), fp32 or bf16


@dataclass(frozen=True)
class Runtime:
    """Where and how the steps run."""

    device: str = "auto"  # auto: CUDA when available (one GPU per torchrun process), else CPU
    workers: int = 0
    channels_last: bool = True
    compile: bool = False  # torch.compile the forward; eager (with a warning) where it fails
    checkpoint_every: int = 0  # steps; 0: only at the end of each epoch


@dataclass
class FitResult:
    model: nn.Module  # the given module, holding the best epoch's weights (the EMA's, with an EMA)
    history: list[dict]  # one row per epoch: train and validation figures, lr, speed
    best_score: float
    run_dir: Path | None  # None: the run lived in a temporary folder


class _ModuleTrainer(RunTrainer):
    """A run of a given module, task and datasets (``RunTrainer``'s set-up, without building)."""

    def __init__(self, cfg: TrainConfig, run, *, given: dict, resume: bool, quiet: bool):
        self._given = given
        super().__init__(cfg, run, resume=resume, quiet=quiet)

    def _set_up(self, cfg, rundir, ranks, device, resume: bool, quiet: bool) -> None:
        torch.manual_seed(cfg.seed)
        given = self._given
        plan = plan_steps(len(given["train"]), ranks.world, cfg.batch_size, cfg.accum_steps)
        cfg = resolve_for_run(cfg, rundir, plan, resume)
        model = given["model"].to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        Trainer.__init__(self, cfg, rundir, task=given["task"], model=model,
                         train_set=SeededAugment(given["train"], cfg.seed), val_set=given["val"], plan=plan,
                         ranks=ranks, device=device, resume=resume, quiet=quiet,
                         callbacks=given["callbacks"])  # fmt: skip


def training_task(task, model: nn.Module, **options):
    """A ``Task`` object (loss and metrics) as it is, or a registered task's name turned into one
    for ``model`` (its classes from the model)."""
    if not isinstance(task, str):
        return task
    return get_task(task).training_task(model, **options)


def fit(
    model: nn.Module,
    task,
    train_data: torch.utils.data.Dataset,
    val_data: torch.utils.data.Dataset,
    recipe: Recipe | None = None,
    run_dir: str | os.PathLike | None = None,
    *,
    runtime: Runtime | None = None,
    callbacks: tuple[Callable[[dict], None], ...] = (),
    resume: bool = False,
    quiet: bool = True,
) -> FitResult:
    """Train ``model`` on ``train_data``, validating on ``val_data`` every epoch.

    ``task`` is a registered task's name ("classification", ...) or a ``Task`` object (its batch
    format, loss and metrics: ``effnet.tasks.task.Task``); the datasets yield what it takes
    (classification: ``(image tensor, label)``). Random augmentation inside ``train_data`` is
    seeded per sample, so a run resumed from ``run_dir`` (``resume=True``) continues bitwise as
    if never stopped. ``callbacks`` get each epoch's row. Without ``run_dir`` the run lives in a
    temporary folder. The returned model is ``model`` itself, holding the best epoch's weights."""
    recipe, runtime = recipe or Recipe(), runtime or Runtime()
    task = training_task(task, model)
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    # the run's record (RUN/config.json, the weights' metadata): a task of the user's own counts as classification
    task_name = getattr(task, "name", None) if getattr(task, "name", None) in task_names() else "classification"
    cfg = TrainConfig(task=task_name, model=name, data="(fit)", **asdict(recipe), **asdict(runtime))
    given = {"model": model, "task": task, "train": train_data, "val": val_data, "callbacks": tuple(callbacks)}
    scratch = tempfile.TemporaryDirectory(prefix="effnet-fit-") if run_dir is None else None
    run = Path(run_dir) if run_dir is not None else Path(scratch.name) / "run"
    trainer = None
    try:
        trainer = _ModuleTrainer(cfg, run, given=given, resume=resume, quiet=quiet)
        trainer.fit()
        best = trainer.best_state()
        if best is not None:
            model.load_state_dict(best)
        return FitResult(model, list(trainer.rows), trainer.best_score, None if scratch else run)
    finally:
        if trainer is not None:
            trainer.rundir.unlock()
        shutdown()
        if scratch is not None:
            scratch.cleanup()
