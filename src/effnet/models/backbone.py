"""An EfficientNet trunk for dense tasks: any member (name, phi, or an explicit config) built
``features_only``. Necks and decoders read the channels of each level from ``feature_info``,
never from a table, so swapping B0 for B7 or a pruned model just works."""

from __future__ import annotations

from dataclasses import replace

from effnet.core.errors import UsageError
from effnet.models.config import ModelConfig
from effnet.models.registry import resolve_config


def backbone_config(
    backbone: str | ModelConfig | None = "efficientnet_b0",
    *,
    phi: float | None = None,
    out_indices: tuple[int, ...] = (1, 2, 3, 4),
    **overrides,
) -> ModelConfig:
    """The trunk's config: a registry name, ``phi``, or a ``ModelConfig`` (e.g. from a file)."""
    if isinstance(backbone, ModelConfig):
        config = replace(backbone, **overrides) if overrides else backbone
    else:
        config = resolve_config(backbone, phi=phi, **overrides)
    # A trunk has no classifier; dropout only ever acted on the pooled features.
    return replace(config, features_only=True, out_indices=tuple(out_indices), num_classes=0)


def config_from(value: dict | ModelConfig) -> ModelConfig:
    return value if isinstance(value, ModelConfig) else ModelConfig.from_dict(value)


def name_classes(model, class_names: list[str] | None, count: int, what: str):
    """``model`` with ``class_names`` (one per class of the ``count`` it predicts) attached."""
    if class_names is not None and len(class_names) != count:
        raise UsageError(f"{len(class_names)} class names for {what} of {count} classes")
    model.class_names = list(class_names) if class_names is not None else None
    return model
