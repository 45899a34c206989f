"""Parameter-efficient fine-tuning: which of a pretrained model's tensors a run trains
(``--finetune``), and the optimizer's parameter groups with layer-wise lr decay (``--lr-decay``).

Every mode speaks of the trunk's named parts, ``stem``, ``stages.0`` .. ``stages.N-1`` and
``head`` (the 1x1 conv; a detector's or segmenter's trunk has none): for a classifier the trunk is
the model and its ``classifier`` is the task head; for a detector, segmenter or embedder the trunk
is ``model.trunk`` and its neck and heads are the task head. The task head always trains.

* ``full``: everything trains (optionally with ``--lr-decay``).
* ``linear``: the trunk is frozen, the task head trains (a linear probe for a classifier).
* ``freeze:K``: the stem and the first K stages are frozen, the rest trains.
* ``bitfit``: in the trunk only biases and normalisation parameters train (Zaken et al., 2022);
  its BatchNorm layers stay in train mode, so their running statistics follow the new data.
* ``lora:R``: bitfit plus a trained rank-R update ``up @ down`` of every 1x1 conv's frozen weight
  (LoRA, Hu et al., 2022; ``up`` starts at zero, so the run starts from the pretrained model).
  The 1x1 convs (expand, project, squeeze-excitation, head) hold ~93% of an EfficientNet's
  weights, and LoRA adapts all of them where bitfit can only shift and scale their outputs; the
  3x3/5x5 stem and depthwise convs stay frozen. The update is a ``torch.nn.utils.parametrize``
  parametrization while the run trains (its resume state holds the factors); every weights file
  the run saves has it merged in (``merged``), so it is a plain effnet file of the same size.

A frozen part is frozen whole: its parameters get ``requires_grad=False`` (no gradient is
computed for them and the optimizer never holds them) and the module stays in eval mode through
training, so its BatchNorm statistics do not move and drop-path inside it is off (the features
the trained layers see are the pretrained model's, deterministic). Nothing of this is saved in a
weights file (LoRA's factors are merged into the weights they update): the mode is a setting of
the run (``config.json``, the weights' training metadata) and is applied again, identically, when
a run resumes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from effnet.core.errors import UsageError
from effnet.training.config import TrainConfig, finetune_mode
from effnet.training.source import trunk_of

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def trunk_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The trunk's parts from the input up: stem, each stage, the head conv (when it has one)."""
    trunk = trunk_of(model)
    stem, stages, head = (getattr(trunk, name, None) for name in ("stem", "stages", "head"))
    if not isinstance(stem, nn.Module) or not isinstance(stages, nn.Sequential):
        raise UsageError(
            f"{type(model).__name__} has no EfficientNet trunk (stem, stages, head): --finetune and --lr-decay need one"
        )
    parts = [("stem", stem), *((f"stages.{i}", stage) for i, stage in enumerate(stages))]
    return parts + ([("head", head)] if isinstance(head, nn.Module) else [])


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@dataclass(frozen=True)
class FinetunePlan:
    """What ``apply_finetune`` froze: the modules that stay in eval mode through training."""

    mode: str
    frozen_modules: tuple[nn.Module, ...]
    trainable: int
    total: int

    def hold_frozen(self) -> None:
        """Put the frozen parts back in eval mode (after ``model.train()``, every epoch)."""
        for module in self.frozen_modules:
            module.eval()

    def summary(self) -> dict:
        """What the run reports: in its metrics rows (metrics.csv, --json) and its first line."""
        return {
            "finetune": self.mode,
            "trainable_params": self.trainable,
            "total_params": self.total,
            "trainable_pct": round(100.0 * self.trainable / max(1, self.total), 4),
        }

    def describe(self) -> str:
        share = 100.0 * self.trainable / max(1, self.total)
        return f"parameters: {self.trainable:,} of {self.total:,} train ({share:.2f}%; --finetune {self.mode})"


class LowRankUpdate(nn.Module):
    """A 1x1 conv's weight W as W + up @ down (LoRA), as a parametrization of ``conv.weight``.

    ``down`` starts as nn.Linear's default (Kaiming-uniform) and ``up`` at zero, as in the LoRA
    paper and the peft library, with the update's scale alpha / R = 1."""

    def __init__(self, conv: nn.Conv2d, rank: int):
        super().__init__()
        like = {"dtype": conv.weight.dtype, "device": conv.weight.device}
        self.down = nn.Parameter(torch.empty(rank, conv.in_channels, **like))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.up = nn.Parameter(torch.zeros(conv.out_channels, rank, **like))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.up @ self.down).view_as(weight)


def _pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1


def add_low_rank_updates(model: nn.Module, rank: int) -> int:
    """Parametrize every 1x1 conv of the trunk with a rank-``rank`` update; the factors' size."""
    added = 0
    for _, part in trunk_parts(model):
        for module in [m for m in part.modules() if _pointwise(m) and not parametrize.is_parametrized(m)]:
            update = LowRankUpdate(module, rank)
            parametrize.register_parametrization(module, "weight", update)
            added += update.down.numel() + update.up.numel()
    return added


def _low_ranked(module: nn.Module) -> bool:
    """A conv whose weight LoRA parametrizes (not another parametrization: QAT's int8 rounding in
    ``effnet.compress.qat`` trains through the same trainer and keeps its own)."""
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, LowRankUpdate) for p in module.parametrizations["weight"]
    )


def merged(module: nn.Module) -> nn.Module:
    """``module`` itself, or where LoRA parametrizes it, a copy with every update merged into its
    weight: the tensors and keys of the plain model, what a weights file holds."""
    if not any(_low_ranked(m) for m in module.modules()):
        return module
    plain = copy.deepcopy(module)
    for m in [m for m in plain.modules() if _low_ranked(m)]:  # listed first: the loop edits the tree
        with torch.no_grad():
            weight = m.weight.clone()  # W + up @ down, computed by the parametrization
        # Not parametrize.remove_parametrizations: a deepcopy keeps the original's generated
        # class, and removal deletes the property from that class, breaking the module that
        # trains (and its EMA). The copy goes back to its plain class instead (LoRA is the
        # module's only parametrization: add_low_rank_updates makes it so).
        del m._modules["parametrizations"]
        m.__class__ = type(m).__bases__[0]
        m.register_parameter("weight", nn.Parameter(weight, requires_grad=False))
    return plain


def apply_finetune(model: nn.Module, mode: str = "full") -> FinetunePlan:
    """Freeze what ``mode`` leaves out (see the module's docstring). ``full`` touches nothing, so
    a module whose owner froze parts of it (``effnet.fit``) keeps them frozen."""
    name, k = finetune_mode(mode)
    frozen_modules: list[nn.Module] = []
    frozen_params: list[nn.Parameter] = []
    added = 0
    if name in ("linear", "freeze"):
        parts = trunk_parts(model)
        if name == "freeze":
            stages = sum(part.startswith("stages.") for part, _ in parts)
            if k > stages:
                raise UsageError(f"--finetune {mode}: the trunk has {stages} stages, so K must be 0 to {stages}")
            parts = parts[: 1 + k]  # the stem and the first K stages
        frozen_modules = [module for _, module in parts]
        frozen_params = [p for module in frozen_modules for p in module.parameters()]
    elif name in ("bitfit", "lora"):
        for _, part in trunk_parts(model):
            for module in part.modules():
                if isinstance(module, NORMS):
                    continue  # its weight and bias train
                frozen_params += [p for pname, p in module.named_parameters(recurse=False) if pname != "bias"]
    for p in frozen_params:
        p.requires_grad_(False)
    if name == "lora":  # after freezing: the parametrization keeps the frozen weight as its `original`
        added = add_low_rank_updates(model, k)
    trainable, total = count_params(model)
    total -= added  # the share is of the model a user keeps: the saved file has the factors merged
    if trainable == 0:
        raise UsageError(f"--finetune {mode} leaves nothing of {type(model).__name__} to train")
    plan = FinetunePlan(mode, tuple(frozen_modules), trainable, total)
    plan.hold_frozen()
    return plan


def layer_depths(model: nn.Module) -> dict[int, int]:
    """id(parameter) -> how many parts below the top it sits: the head conv and everything outside
    the trunk (classifier, neck, task heads) 0, the last stage 1, ..., the stem N + 1."""
    parts = trunk_parts(model)
    stages = sum(part.startswith("stages.") for part, _ in parts)
    depth_of = {"stem": stages + 1, "head": 0, **{f"stages.{i}": stages - i for i in range(stages)}}
    return {id(p): depth_of[part] for part, module in parts for p in module.parameters()}


def param_groups(model: nn.Module, cfg: TrainConfig, lr: float) -> list[dict]:
    """The optimizer's groups over the trainable parameters. Weight decay only on conv and linear
    weights (decaying BN scales and biases only hurts); with ``cfg.lr_decay`` D < 1 one pair of
    groups per part, at lr x D^depth (``layer_depths``: BEiT's layer-wise decay, by stage as
    timm's ``param_groups_layer_decay`` does by its group matcher). With D = 1 the two groups are
    exactly the ones a run had before layer decay existed, so its resume state still fits."""
    depths = layer_depths(model) if cfg.lr_decay != 1.0 else {}
    groups: dict[tuple[int, bool], dict] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        depth, decayed = depths.get(id(p), 0), p.ndim > 1
        group = groups.setdefault(
            (depth, decayed),
            {"params": [], "weight_decay": cfg.weight_decay if decayed else 0.0, "lr": lr * cfg.lr_decay**depth},
        )
        group["params"].append(p)
    if cfg.lr_decay == 1.0:  # the two groups of before, in their order (decayed first), even when one is empty
        return [groups.get((0, True), {"params": [], "weight_decay": cfg.weight_decay, "lr": lr}),
                groups.get((0, False), {"params": [], "weight_decay": 0.0, "lr": lr})]  # fmt: skip
    # the top first: row["lr"] and the reports read the first group, the base lr
    return [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]


def frozen_pairs(model: nn.Module, copy: nn.Module, plan: FinetunePlan) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(copy's tensor, model's tensor) for every tensor the run must leave as it is: frozen
    parameters and the buffers (BN statistics) of frozen parts. The weight EMA averages a
    constant into itself, which moves it by rounding; these pairs put it back to the bit."""
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    frozen |= {id(b) for module in plan.frozen_modules for b in module.buffers()}
    theirs = dict(copy.named_parameters()) | dict(copy.named_buffers())
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    return [(theirs[name], t) for name, t in ours.items() if id(t) in frozen]
