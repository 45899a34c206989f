"""Turn other implementations' EfficientNet weights into ours, key by key.

Each source is described by how its keys name the same parts (stem, blocks, head); the
parts themselves are identical tensors in every implementation, so conversion is renaming.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from effnet.core.errors import WeightsError

SOURCES = ("effnet", "torchvision", "timm", "lukemelas")

_BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# The stem convolution's key: the one key every implementation names differently.
_MARKERS = {
    "stem.conv.weight": "effnet",
    "features.0.0.weight": "torchvision",
    "conv_stem.weight": "timm",
    "_conv_stem.weight": "lukemelas",
}


def _looks_like(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, str] | None:
    """(source, the key that says so), or None when no stem key is known."""
    return next(((source, key) for key, source in _MARKERS.items() if key in state_dict), None)


def detect_source(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Guess which implementation saved ``state_dict`` from its stem's key."""
    if found := _looks_like(state_dict):
        return found[0]
    sample = ", ".join(list(state_dict)[:3]) or "no keys"
    raise WeightsError(f"cannot tell which implementation saved these weights (first keys: {sample})")


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Accept the usual checkpoint wrappers ({'state_dict': ...}, {'model': ...}, DDP's 'module.')."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "ema"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError("the checkpoint does not hold a state dict (a mapping of names to tensors)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    source: str | None = None,
    *,
    stage_depths: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename a peer's EfficientNet state dict to effnet's keys.

    ``source`` is one of ``torchvision``, ``timm``, ``lukemelas`` (or ``effnet``); ``None``
    detects it. lukemelas numbers blocks flat; its stage boundaries are where a block changes
    the channel count, unless ``stage_depths`` gives them.
    """
    state_dict = unwrap_state_dict(state_dict)
    source = source or detect_source(state_dict)
    if source not in SOURCES:
        raise WeightsError(f"unknown weights source {source!r}; expected one of {', '.join(SOURCES)}")
    found = _looks_like(state_dict)
    if found and found[0] != source:  # each renaming assumes its own layout: a wrong one fails anywhere
        raise WeightsError(
            f"these are not {source} weights: the keys look like {found[0]} weights ({found[1]!r}); "
            f"pass --source {found[0]} or leave it out to detect it"
        )
    if source == "effnet":
        return dict(state_dict)
    rename = {"torchvision": _torchvision_key, "timm": _timm_key, "lukemelas": _lukemelas_key}[source]
    context = _lukemelas_stages(state_dict, stage_depths) if source == "lukemelas" else _block_kinds(state_dict, source)
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = rename(key, context)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise WeightsError(f"{len(unknown)} {source} keys have no effnet equivalent, first: {', '.join(unknown[:5])}")
    return out


def _block_kinds(sd, source: str) -> dict[tuple[int, int], str]:
    """(stage, block) -> the block's kind, named as timm names them: "ir" (MBConv with an
    expansion), "ds" (MBConv1), "er" (Fused-MBConv with an expansion), "cn" (Fused-MBConv1).
    The kind decides what each sub-layer index (torchvision) or name (timm) is."""
    if source == "torchvision":
        # The sub-layer indices a block has tell its kind: 0-3 expand/dw/se/project, 0-2
        # dw/se/project, 0-1 fused/project, 0 fused alone.
        pat = re.compile(r"features\.(\d+)\.(\d+)\.block\.(\d+)\.")
        by_count = {4: "ir", 3: "ds", 2: "er", 1: "cn"}
    else:
        pat = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.")
    parts: dict[tuple[int, int], set[str]] = {}
    for key in sd:
        m = pat.match(key)
        if m:
            parts.setdefault((int(m[1]), int(m[2])), set()).add(m[3])
    if source == "torchvision":
        return {blk: by_count.get(len(names), "?") for blk, names in parts.items()}
    kinds = {}
    for blk, names in parts.items():
        if "conv_exp" in names:
            kinds[blk] = "er"
        elif "conv" in names:
            kinds[blk] = "cn"
        else:
            kinds[blk] = "ir" if "conv_pwl" in names else "ds"
    return kinds


def _bn(prefix: str, leaf: str) -> str | None:
    return f"{prefix}.{leaf}" if leaf in _BN_LEAVES else None


def _torchvision_key(key: str, kinds) -> str | None:
    last_feature = max((s for s, _ in kinds), default=-1) + 1
    if m := re.fullmatch(r"features\.0\.([01])\.(\w+)", key):
        return "stem.conv.weight" if m[1] == "0" else _bn("stem.bn", m[2])
    if m := re.fullmatch(r"features\.(\d+)\.([01])\.(\w+)", key):
        if int(m[1]) == last_feature:
            return "head.conv.weight" if m[2] == "0" else _bn("head.bn", m[3])
    if m := re.fullmatch(r"classifier\.1\.(weight|bias)", key):
        return f"classifier.{m[1]}"
    m = re.fullmatch(r"features\.(\d+)\.(\d+)\.block\.(\d)\.(.+)", key)
    if not m:
        return None
    stage, block, idx, rest = int(m[1]), int(m[2]), int(m[3]), m[4]
    parts = _TORCHVISION_PARTS.get(kinds[(stage, block)], [])
    if idx >= len(parts):
        return None
    part = parts[idx]
    prefix = f"stages.{stage - 1}.{block}"
    if part == "se":
        se = re.fullmatch(r"fc([12])\.(weight|bias)", rest)
        return se and f"{prefix}.se.{'reduce' if se[1] == '1' else 'expand'}.{se[2]}"
    sub = re.fullmatch(r"([01])\.(\w+)", rest)
    if not sub:
        return None
    return f"{prefix}.{part}_conv.weight" if sub[1] == "0" else _bn(f"{prefix}.{part}_bn", sub[2])


_TORCHVISION_PARTS = {
    "ir": ["expand", "dw", "se", "project"],
    "ds": ["dw", "se", "project"],
    "er": ["fused", "project"],
    "cn": ["fused"],
}

_TIMM_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn"}
_TIMM_BLOCKS = {
    "ir": {
        "conv_pw": "expand_conv",
        "bn1": "expand_bn",
        "conv_dw": "dw_conv",
        "bn2": "dw_bn",
        "conv_pwl": "project_conv",
        "bn3": "project_bn",
    },
    "ds": {"conv_dw": "dw_conv", "bn1": "dw_bn", "conv_pw": "project_conv", "bn2": "project_bn"},
    "er": {"conv_exp": "fused_conv", "bn1": "fused_bn", "conv_pwl": "project_conv", "bn2": "project_bn"},
    "cn": {"conv": "fused_conv", "bn1": "fused_bn"},
}
_SE = {"conv_reduce": "reduce", "conv_expand": "expand", "_se_reduce": "reduce", "_se_expand": "expand"}


def _timm_key(key: str, kinds) -> str | None:
    if m := re.fullmatch(r"(conv_stem|bn1|conv_head|bn2)\.(\w+)", key):
        return f"{_TIMM_TOP[m[1]]}.{m[2]}"
    if m := re.fullmatch(r"classifier\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", key)
    if not m:
        return None
    stage, block, rest = int(m[1]), int(m[2]), m[3]
    prefix = f"stages.{stage}.{block}"
    if se := re.fullmatch(r"se\.(conv_reduce|conv_expand)\.(weight|bias)", rest):
        return f"{prefix}.se.{_SE[se[1]]}.{se[2]}"
    names = _TIMM_BLOCKS.get(kinds.get((stage, block)), {})
    part = re.fullmatch(r"(\w+)\.(\w+)", rest)
    if not part or part[1] not in names:
        return None
    return f"{prefix}.{names[part[1]]}.{part[2]}"


_LUKE_TOP = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier",
}
_LUKE_BLOCK = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "dw_conv",
    "_bn1": "dw_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}


def _lukemelas_stages(sd, stage_depths) -> dict[int, tuple[int, int]]:
    """Flat block index -> (stage, index in stage)."""
    n_blocks = 1 + max((int(m[1]) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k))), default=-1)
    if stage_depths is None:
        starts = []
        for i in range(n_blocks):
            if f"_blocks.{i}._project_conv.weight" not in sd:
                raise WeightsError(f"lukemelas block {i} has no _blocks.{i}._project_conv.weight")
            out_ch = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
            expand = sd.get(f"_blocks.{i}._expand_conv.weight")
            in_ch = expand.shape[1] if expand is not None else sd[f"_blocks.{i}._depthwise_conv.weight"].shape[0]
            if i == 0 or in_ch != out_ch:
                starts.append(i)
        ends = starts[1:] + [n_blocks] if starts else []
        stage_depths = tuple(b - a for a, b in zip(starts, ends, strict=True))
    if sum(stage_depths) != n_blocks:
        raise WeightsError(f"stage depths {stage_depths} do not add up to the checkpoint's {n_blocks} blocks")
    where, flat = {}, 0
    for stage, depth in enumerate(stage_depths):
        for j in range(depth):
            where[flat] = (stage, j)
            flat += 1
    return where


def _lukemelas_key(key: str, where) -> str | None:
    if m := re.fullmatch(r"(_conv_stem|_bn0|_conv_head|_bn1|_fc)\.(\w+)", key):
        return f"{_LUKE_TOP[m[1]]}.{m[2]}"
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if not m:
        return None
    stage, block = where[int(m[1])]
    prefix = f"stages.{stage}.{block}"
    if m[2] in _SE:
        return f"{prefix}.se.{_SE[m[2]]}.{m[3]}"
    return f"{prefix}.{_LUKE_BLOCK[m[2]]}.{m[3]}" if m[2] in _LUKE_BLOCK else None
