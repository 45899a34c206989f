"""Where a run's model comes from, for every task: its architecture (a name, phi, or the file of
``--weights``) and, when fine-tuning, the weights that initialise it.

One rule for all tasks: a file of the run's own task fills the whole model, its trunk strictly
and its head (a classifier's last layer; a detector's FPN and heads) wherever the shapes still fit,
so that new classes start with fresh class-dependent layers only; a file of another task (an
ImageNet classifier under a detector) gives the trunk alone.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from effnet.models.config import ModelConfig
from effnet.models.efficientdet import efficientdet_config
from effnet.models.registry import resolve_config
from effnet.tasks.registry import task_of
from effnet.weights.io import load_weights
from effnet.weights.trained import load_trained


def trunk_of(model: nn.Module) -> nn.Module:
    """The EfficientNet inside a task model, or the classifier itself."""
    return getattr(model, "trunk", model)


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys outside the trunk: a classifier's ``classifier.*``, a task model's neck
    and heads (found by storage, since every task names its trunk's keys its own way)."""
    own = model.state_dict()
    if not hasattr(model, "trunk"):
        return {k for k in own if k.startswith("classifier.")}
    trunk = {t.data_ptr() for t in model.trunk.state_dict().values()}
    return {k for k, t in own.items() if t.data_ptr() not in trunk}


class WeightsSource:
    """``cfg.weights`` opened once (or nothing, for a run from scratch)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = load_trained(cfg.weights).model if cfg.weights else None
        self.same_task = self.model is not None and task_of(self.model) == cfg.task

    def architecture(self, cfg) -> ModelConfig:
        """The trunk's (a classifier's) config for the run: the file's own when no --model or --phi
        is given (a pruned model exists only there), else the named or scaled member with the
        padding and BN eps the file was trained with; the run's regularisation either way."""
        regularise = {"drop_path_rate": cfg.drop_path_rate, "bn_momentum": cfg.bn_momentum}
        trunk = trunk_of(self.model).config if self.model is not None else None
        if cfg.task == "detection" and cfg.detector == "efficientdet":
            # the detector's table (or rule) fixes its trunk: TF padding, BN eps 1e-3, P3-P5 out
            return efficientdet_config(cfg.model, phi=cfg.phi, **regularise).backbone
        if cfg.model is None and cfg.phi is None:
            return replace(trunk, **regularise)
        arch = {"padding": trunk.padding, "bn_eps": trunk.bn_eps} if trunk is not None else {}
        return resolve_config(cfg.model, phi=cfg.phi, width=cfg.width, depth=cfg.depth, **arch, **regularise)

    def whole_fits(self, classes: list[str]) -> bool:
        """A file of this task trained on these very classes: the run continues it as it is."""
        return self.same_task and self.model.class_names == list(classes)

    def load_into(self, model: nn.Module) -> nn.Module:
        if self.model is None:
            return model
        origin = f"--weights {self.cfg.weights}"
        if not self.same_task:
            own = trunk_of(model).state_dict()
            taken = {k: v for k, v in trunk_of(self.model).state_dict().items() if k in own}
            load_weights(trunk_of(model), taken, origin=f"{origin} (its trunk)")
            return model
        state, own = self.model.state_dict(), model.state_dict()
        for key in head_keys(self.model) - own.keys():
            del state[key]  # another head (e.g. FCOS for Faster R-CNN): only what fits is taken
        for key in head_keys(model):
            if key not in state or state[key].shape != own[key].shape:
                state[key] = own[key]  # new classes: this head tensor starts fresh
        return load_weights(model, state, origin=origin)
