"""The optimizer, learning-rate schedule and weight EMA that a resolved TrainConfig implies.

The settings themselves (the paper's recipe and the short one) are in training.config. The
paper's optimizer is RMSprop in TF's form: decay 0.9, momentum 0.9, eps 1e-3 inside the square
root (timm's RMSpropTF); its schedule a linear warm-up then x0.97 every 2.4 epochs.
"""

from __future__ import annotations

import math

import torch

from effnet.training.config import TrainConfig
from effnet.training.finetune import param_groups


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters only (a frozen one is never held, so it has no
    state and nothing, weight decay included, can move it); groups: ``finetune.param_groups``."""
    groups = param_groups(model, cfg, lr)
    if cfg.opt == "rmsproptf":
        from timm.optim import RMSpropTF

        return RMSpropTF(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=0.9)
    # The fused kernels update every tensor in one pass: AdamW's step on B0 takes 2.4 ms instead of
    # the multi-tensor (foreach) form's 10.4 ms on this CPU, 3% of a 64 px training step.
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices <= {"cpu"} or devices <= {"cuda"}
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, fused=fused)


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


def tf_ema_multi_avg_fn(decay: float):
    """TF's ExponentialMovingAverage with num_updates: the decay ramps up as (1+n)/(10+n), so
    the average tracks the model early on instead of staying at the random init. For
    ``AveragedModel(multi_avg_fn=...)``: one multi-tensor lerp per dtype (1.5 ms for B0, against
    8.7 ms tensor by tensor); integer buffers (BN's batch counters) are copied, not averaged."""

    def avg(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return avg
