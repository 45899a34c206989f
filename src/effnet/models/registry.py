"""Named models and ``create_model``: the one way to build any member of the family."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from effnet.core.errors import UsageError
from effnet.models.config import ModelConfig
from effnet.models.efficientnet import EfficientNet
from effnet.models.scaling import ALPHA, BETA, GAMMA, PHI_BASELINES, PUBLISHED, Scale, compound_scale


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    scale: Scale


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: str, scale: Scale) -> ModelEntry:
    """Add a named model. Duplicate names raise: a silent overwrite would change what a
    name means depending on import order."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    entry = ModelEntry(name=name, family=family, scale=scale)
    _REGISTRY[name] = entry
    return entry


def family_of(name: str) -> str:
    """Which stage table a published name is built from."""
    if name.startswith("efficientnet_lite"):
        return "lite"
    if name.startswith("efficientnetv2_b"):
        return "efficientnetv2"  # V2-B0's table, scaled
    if name.startswith("efficientnetv2_"):
        return name  # S, M, L, XL: a table each
    return "efficientnet"


for _name, _scale in PUBLISHED.items():
    register(_name, family_of(_name), _scale)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names in table order (B0..B8, L2, Lite0..4, V2 B0..B3, S, M, L, XL); ``pattern``
    is an fnmatch glob."""
    names = list(_REGISTRY)
    if pattern:
        import fnmatch

        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        # Common slips first: lukemelas-style dashes, upper case, the letter o for zero.
        def norm(s: str) -> str:
            return str(s).lower().replace("-", "_").replace("o", "0")

        close = [n for n in _REGISTRY if norm(n) == norm(name)]
        close += [n for n in difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5) if n not in close]
        close = close[:3]
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(_REGISTRY)}"
        raise UsageError(f"unknown model name {name!r}{hint}") from None


def resolve_config(
    name: str | None = None,
    *,
    phi: float | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    width: float | None = None,
    depth: float | None = None,
    resolution: int | None = None,
    dropout: float | None = None,
    **overrides,
) -> ModelConfig:
    """Turn a name and/or phi plus explicit overrides into a complete ModelConfig."""
    if name is None and phi is None and (width is None or depth is None):
        raise UsageError("give a model name, phi=, or both width= and depth=")
    if phi is not None:
        base = name or "efficientnet_b0"
        if base not in PHI_BASELINES:
            raise UsageError(
                f"phi= scales a baseline ({', '.join(PHI_BASELINES)}), not {base!r}; "
                "named models use the published table instead"
            )
        family = PHI_BASELINES[base]
        entry = get_entry(base)
        scale = compound_scale(phi, alpha, beta, gamma, base_resolution=entry.scale.resolution)
        name = f"{base}_phi{phi:g}"
    elif name is not None:
        entry = get_entry(name)
        family, scale = entry.family, entry.scale
    else:
        family, scale, name = "efficientnet", PUBLISHED["efficientnet_b0"], "efficientnet_custom"
    return ModelConfig(
        name=name,
        family=overrides.pop("family", family),
        width=scale.width if width is None else width,
        depth=scale.depth if depth is None else depth,
        resolution=scale.resolution if resolution is None else resolution,
        dropout=scale.dropout if dropout is None else dropout,
        phi=phi,
        **overrides,
    )


def create_model(
    name: str | None = None,
    *,
    phi: float | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    width: float | None = None,
    depth: float | None = None,
    resolution: int | None = None,
    dropout: float | None = None,
    drop_path_rate: float = 0.2,
    bn_eps: float = 1e-3,
    bn_momentum: float = 0.01,
    padding: str = "symmetric",
    features_only: bool = False,
    out_indices: tuple[int, ...] = (1, 2, 3, 4),
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    class_names: list[str] | None = None,
):
    """Build an EfficientNet by name (published table) or by ``phi`` (compound-scaling rule).

    Explicit ``width``/``depth``/``resolution``/``dropout`` override either source.
    """
    config = resolve_config(
        name,
        phi=phi,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        width=width,
        depth=depth,
        resolution=resolution,
        dropout=dropout,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_path_rate=drop_path_rate,
        bn_eps=bn_eps,
        bn_momentum=bn_momentum,
        padding=padding,
        features_only=features_only,
        out_indices=tuple(out_indices),
    )
    return build_model(config, class_names=class_names)


def build_model(config: ModelConfig, class_names: list[str] | None = None, preprocessing=None):
    if class_names is not None and config.num_classes and len(class_names) != config.num_classes:
        raise UsageError(f"{len(class_names)} class names given for a model with {config.num_classes} classes")
    model = EfficientNet(config)
    if class_names is not None:
        model.class_names = list(class_names)
    if preprocessing is not None:
        model.preprocessing = preprocessing
    return model
