"""Models of tasks other than plain classification, by task name, so that a weights file that says
``task: detection`` and carries a ``DetectorConfig`` can be rebuilt with nothing else.

The table lives here, below the weights layer that reads files; the task registry
(``effnet.tasks.registry.register(..., model=...)``) adds a new task's model to it.
"""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.detection import DetectorConfig, build_detector
from effnet.models.efficientdet import EfficientDetConfig
from effnet.models.efficientdet_detector import build_efficientdet
from effnet.models.embedding import EmbedderConfig, build_embedder
from effnet.models.segmentation import SegmenterConfig, build_segmenter

# task -> (its model's config type, a function (config, class_names) -> model)
_MODELS: dict[str, tuple[type, object]] = {}
# (task, kind) -> the same, for a second family of models of a task, told apart by the "kind" its
# config dict carries (detection: EfficientDet beside torchvision's detectors)
_KINDS: dict[tuple[str, str], tuple[type, object]] = {}


def register_model(task: str, config_type: type, build, kind: str | None = None) -> None:
    """``config_type`` has ``from_dict``; ``build(config, class_names)`` makes the model. A
    ``kind`` adds another family to a task whose configs say ``"kind": kind``."""
    table, key = (_MODELS, task) if kind is None else (_KINDS, (task, kind))
    if key in table:
        raise ValueError(f"a model for task {task!r}{f' of kind {kind!r}' if kind else ''} is registered already")
    table[key] = (config_type, build)


def unregister_model(task: str) -> None:
    _MODELS.pop(task, None)
    for key in [k for k in _KINDS if k[0] == task]:
        del _KINDS[key]


def task_config(task: str, d: dict):
    if (task, d.get("kind")) in _KINDS:
        return _KINDS[task, d["kind"]][0].from_dict(d)
    if task not in _MODELS:
        raise ValueError(f"unknown task {task!r}; known: classification, {', '.join(_MODELS)}")
    return _MODELS[task][0].from_dict(d)


def build_task_model(config, class_names: list[str] | None = None, task: str | None = None) -> nn.Module:
    """The model ``config`` describes (of ``task``, whose families are told apart by config type)."""
    for key, (config_type, build) in [*_MODELS.items(), *((k[0], v) for k, v in _KINDS.items())]:
        if isinstance(config, config_type) and task in (None, key):
            return build(config, class_names)
    raise TypeError(f"not a task model config{f' of task {task!r}' if task else ''}: {type(config).__name__}")


def count_task_params(config) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_task_model(config).parameters())


register_model("detection", DetectorConfig, build_detector)
register_model("detection", EfficientDetConfig, build_efficientdet, kind="efficientdet")
register_model("segmentation", SegmenterConfig, build_segmenter)
register_model("embedding", EmbedderConfig, build_embedder)
