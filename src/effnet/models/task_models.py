"""The models of the dense and metric tasks by name, so that a weights file that says
``task: detection`` and carries a ``DetectorConfig`` can be rebuilt with nothing else."""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.detection import DetectorConfig, build_detector
from effnet.models.embedding import EmbedderConfig, build_embedder
from effnet.models.segmentation import SegmenterConfig, build_segmenter

TASK_MODELS = {
    "detection": (DetectorConfig, build_detector),
    "segmentation": (SegmenterConfig, build_segmenter),
    "embedding": (EmbedderConfig, build_embedder),
}


def task_config(task: str, d: dict):
    if task not in TASK_MODELS:
        raise ValueError(f"unknown task {task!r}; known: classification, {', '.join(TASK_MODELS)}")
    return TASK_MODELS[task][0].from_dict(d)


def build_task_model(config, class_names: list[str] | None = None) -> nn.Module:
    for config_type, build in TASK_MODELS.values():
        if isinstance(config, config_type):
            return build(config, class_names)
    raise TypeError(f"not a task model config: {type(config).__name__}")


def count_task_params(config) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return build_task_model(config).num_params()
