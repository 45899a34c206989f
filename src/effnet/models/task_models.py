"""Models of tasks other than plain classification, by task name, so that a weights file that says
``task: detection`` and carries a ``DetectorConfig`` can be rebuilt with nothing else.

The table lives here, below the weights layer that reads files; the task registry
(``effnet.tasks.registry.register(..., model=...)``) adds a new task's model to it.
"""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.detection import DetectorConfig, build_detector
from effnet.models.embedding import EmbedderConfig, build_embedder
from effnet.models.segmentation import SegmenterConfig, build_segmenter

# task -> (its model's config type, a function (config, class_names) -> model)
_MODELS: dict[str, tuple[type, object]] = {}


def register_model(task: str, config_type: type, build) -> None:
    """``config_type`` has ``from_dict``; ``build(config, class_names)`` makes the model."""
    if task in _MODELS:
        raise ValueError(f"a model for task {task!r} is registered already")
    _MODELS[task] = (config_type, build)


def unregister_model(task: str) -> None:
    _MODELS.pop(task, None)


def task_config(task: str, d: dict):
    if task not in _MODELS:
        raise ValueError(f"unknown task {task!r}; known: classification, {', '.join(_MODELS)}")
    return _MODELS[task][0].from_dict(d)


def build_task_model(config, class_names: list[str] | None = None, task: str | None = None) -> nn.Module:
    """The model of ``task`` (default: the task whose config type ``config`` is)."""
    if task is not None:
        return _MODELS[task][1](config, class_names)
    for config_type, build in _MODELS.values():
        if isinstance(config, config_type):
            return build(config, class_names)
    raise TypeError(f"not a task model config: {type(config).__name__}")


def count_task_params(config) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_task_model(config).parameters())


register_model("detection", DetectorConfig, build_detector)
register_model("segmentation", SegmenterConfig, build_segmenter)
register_model("embedding", EmbedderConfig, build_embedder)
