"""Training hyperparameters and the optimizer/schedule they imply.

The defaults are the paper's ImageNet recipe (TF reference implementation): RMSprop with decay
0.9, momentum 0.9, eps 1e-3 (eps inside the square root, as TF does it); lr 0.016 per 256 images
with a linear warm-up and x0.97 every 2.4 epochs; weight decay 1e-5; label smoothing 0.1;
RandAugment; weight EMA 0.9999; stochastic depth 0.2; dropout by variant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from effnet.errors import UsageError

OPTIMIZERS = ("rmsproptf", "adamw", "sgd")
SCHEDULES = ("step", "cosine")
AMP = ("none", "bf16")

# Learning rate per 256 images for each optimizer (scaled linearly with the batch).
BASE_LR = {"rmsproptf": 0.016, "adamw": 1e-3, "sgd": 0.1}


# The short-run recipe that the search, the scaling study, pruning's fine-tuning and the
# compression pipeline share: AdamW + cosine and light augmentation converge in a few epochs,
# while the paper's RMSprop schedule, 0.9999 EMA and stochastic depth need hundreds; BN
# momentum 0.1 lets the running statistics settle within a few hundred steps.
SHORT_RUN = dict(
    opt="adamw",
    weight_decay=0.01,
    sched="cosine",
    augment="light",
    ema_decay=0.0,
    drop_path_rate=0.0,
    bn_momentum=0.1,
    channels_last=True,
)


@dataclass
class TrainConfig:
    """Everything needed to repeat a run; written to RUN/config.json."""

    model: str | None = "efficientnet_b0"  # None with --weights: the file's architecture (e.g. pruned)
    phi: float | None = None  # compound-scaled B0 instead of a named model
    # Explicit multipliers override the model's (the scaling search and study train such models).
    width: float | None = None
    depth: float | None = None
    weights: str | None = None  # initialise from a weights file or pretrained tag (fine-tuning)
    data: str = "digits"  # fashion-mnist, digits, or an image folder
    data_dir: str | None = None
    val_split: float = 0.1
    limit_train: int | None = None
    bad_images: str = "error"
    image_size: int | None = None  # None: the model's resolution
    augment: str = "paper"  # paper | light | none (see datasets.transforms)
    epochs: int = 10
    batch_size: int = 64  # per process
    seed: int = 0
    opt: str = "rmsproptf"
    lr: float | None = None  # None: BASE_LR[opt] * global batch / 256
    sched: str = "step"
    warmup_epochs: float = 5.0  # capped at a fifth of the run, so short runs still decay
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999  # 0 disables the weight EMA
    drop_path_rate: float = 0.2
    dropout: float | None = None  # None: the variant's
    # TF's BN decay 0.99. Its running statistics need a few hundred steps to settle, so runs of
    # only a few hundred steps (small data, quick tests) validate better with 0.1.
    bn_momentum: float = 0.01
    amp: str = "none"
    channels_last: bool = False
    memory_efficient: bool = False  # activation checkpointing per block: ~40% less peak memory
    # Knowledge distillation (Hinton et al., 2015): a trained teacher's softened outputs join
    # the labels. loss = kd_alpha * T^2 * KL(teacher_T || student_T) + (1 - kd_alpha) * CE.
    teacher: str | None = None
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    # Run the teacher once over the training images and reuse its logits every epoch
    # (RUN/teacher_logits.safetensors). Exact only without augmentation: an augmented image is
    # not the image the teacher's logits were computed on.
    cache_teacher: bool = False
    clip_grad: float | None = None
    accum_steps: int = 1
    checkpoint_every: int = 0  # steps; 0: only at the end of each epoch
    workers: int = 0
    device: str = "auto"  # auto: CUDA when available (one GPU per torchrun process), else CPU

    def __post_init__(self):
        if self.model is not None and self.phi is not None:
            raise UsageError("give only one of --model and --phi")
        if self.model is None and self.phi is None and not self.weights:
            raise UsageError("give --model, --phi, or --weights FILE to take the architecture from")
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("accum_steps", self.accum_steps >= 1),
            ("checkpoint_every", self.checkpoint_every >= 0),
            ("workers", self.workers >= 0),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0),
            ("ema_decay", 0.0 <= self.ema_decay < 1.0),
            ("bn_momentum", 0.0 < self.bn_momentum <= 1.0),
            ("weight_decay", self.weight_decay >= 0.0),
            ("warmup_epochs", self.warmup_epochs >= 0.0),
            ("image_size", self.image_size is None or 8 <= self.image_size <= 4096),
            ("lr", self.lr is None or (math.isfinite(self.lr) and self.lr > 0)),
            ("clip_grad", self.clip_grad is None or self.clip_grad > 0),
            ("kd_temperature", math.isfinite(self.kd_temperature) and self.kd_temperature > 0),
            ("kd_alpha", 0.0 <= self.kd_alpha <= 1.0),
        ]
        for name, ok in checks:
            if not ok:
                raise UsageError(f"--{name.replace('_', '-')}={getattr(self, name)!r} is out of range")
        if self.cache_teacher and not self.teacher:
            raise UsageError("--cache-teacher needs a teacher (effnet distill --teacher FILE)")
        if self.cache_teacher and self.augment != "none":
            raise UsageError(
                f"--cache-teacher needs --augment none: the cached logits are the teacher's on the un-augmented "
                f"images, and --augment {self.augment} would train the student on other images"
            )
        for name, allowed in (("opt", OPTIMIZERS), ("sched", SCHEDULES), ("amp", AMP)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    # Weight decay on conv/linear weights only: decaying BN scales and biases only hurts.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.opt == "rmsproptf":
        from timm.optim import RMSpropTF

        return RMSpropTF(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=0.9)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    """Multiplier of the base lr at optimizer step ``t``: linear warm-up, then the schedule."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total // 5)
    decay_steps = max(1, int(cfg.decay_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.sched == "step":  # TF's staircase exponential decay
            return cfg.decay_rate ** ((step - warmup) // decay_steps)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def tf_ema_avg_fn(decay: float):
    """TF's ExponentialMovingAverage with num_updates: the decay ramps up as (1+n)/(10+n), so
    the average tracks the model early on instead of staying at the random init."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)

    return avg
