"""EfficientDet checkpoints of the reference port (``effdet``, the TF models of google/automl)
renamed to effnet's keys. The tensors are the same; only their names differ: the trunk is timm's
EfficientNet (``effnet.weights.convert``'s timm renaming), and the BiFPN and heads are named by
what they are here (``fpn.cells.R.nodes.N.inputs.K`` for ``fpn.cell.R.fnode.N.combine.resample.K``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from effnet.core.errors import WeightsError
from effnet.models.efficientdet import EfficientDetNet, efficientdet_config
from effnet.models.efficientdet_specs import NUM_ANCHORS, PUBLISHED
from effnet.weights.convert import convert_state_dict, unwrap_state_dict

TRUNK_LEVELS = 3  # effdet's fpn.resample.I are levels I >= 3 of P3..: the extra ones

# (effdet pattern, effnet replacement) for everything but the trunk
_RULES = [
    (r"fpn\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)",
     lambda m: f"fpn.extra.{int(m[1]) - TRUNK_LEVELS}.conv.{m[2]}.{m[3]}"),
    (r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.edge_weights", lambda m: f"fpn.cells.{m[1]}.nodes.{m[2]}.weights"),
    (r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)",
     lambda m: f"fpn.cells.{m[1]}.nodes.{m[2]}.inputs.{m[3]}.conv.{m[4]}.{m[5]}"),
    (r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.conv_(dw|pw)\.(\w+)",
     lambda m: f"fpn.cells.{m[1]}.nodes.{m[2]}.out.{m[3]}.{m[4]}"),
    (r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.bn\.(\w+)",
     lambda m: f"fpn.cells.{m[1]}.nodes.{m[2]}.out.bn.{m[3]}"),
    (r"(class_net|box_net)\.conv_rep\.(\d+)\.conv_(dw|pw)\.(\w+)", lambda m: f"{m[1]}.convs.{m[2]}.{m[3]}.{m[4]}"),
    # BatchNorms by repeat, then level ("bn_rep.R.L.bn", the TF ports) or by level, then repeat
    (r"(class_net|box_net)\.bn_rep\.(\d+)\.(\d+)\.bn\.(\w+)", lambda m: f"{m[1]}.norms.{m[3]}.{m[2]}.{m[4]}"),
    (r"(class_net|box_net)\.bn_rep\.(\d+)\.(\d+)\.(\w+)", lambda m: f"{m[1]}.norms.{m[2]}.{m[3]}.{m[4]}"),
    (r"(class_net|box_net)\.predict\.conv_(dw|pw)\.(\w+)", lambda m: f"{m[1]}.predict.{m[2]}.{m[3]}"),
]  # fmt: skip


def is_effdet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("fpn.cell.") for k in state_dict) and any(k.startswith("class_net.") for k in state_dict)


def convert_effdet_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """effnet's ``EfficientDetNet`` keys for an ``effdet`` ``EfficientDet`` state dict (a bare
    one, or wrapped as checkpoints are); keys it cannot place are an error, not dropped."""
    state_dict = unwrap_state_dict(state_dict)
    if not is_effdet(state_dict):
        raise WeightsError("these are not effdet EfficientDet weights (no fpn.cell.* and class_net.* keys)")
    trunk = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    out = {f"trunk.{k}": v for k, v in convert_state_dict(trunk, "timm").items()}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("backbone.") or key.startswith("anchors."):  # a bench's anchors: recomputed here
            continue
        for pattern, rename in _RULES:
            if m := re.fullmatch(pattern, key):
                out[rename(m)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"{len(unknown)} effdet keys have no effnet equivalent, first: {', '.join(unknown[:5])}")
    return out


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}


def which_efficientdet(state: Mapping[str, torch.Tensor]) -> str | None:
    """The released EfficientDet whose network has exactly these (converted) tensors' shapes,
    built on the meta device (no memory); None for none of them."""
    output = state.get("class_net.predict.pw.weight")
    classes = output.shape[0] // NUM_ANCHORS if output is not None else 90
    want = _shapes(state)
    for name in PUBLISHED:
        with torch.device("meta"):
            net = EfficientDetNet(efficientdet_config(name, num_classes=classes))
        if _shapes(net.state_dict()) == want:
            return name
    return None


def check_efficientdet_fits(state: Mapping[str, torch.Tensor], net: torch.nn.Module, name: str) -> None:
    """One line naming both when converted effdet weights are of another EfficientDet than ``net``
    (``name``): a D1 file imported as D0, say, rather than a list of mismatched tensors."""
    if _shapes(state) == _shapes(net.state_dict()):
        return
    found = which_efficientdet(state)
    found = f"{found}'s" if found else "another EfficientDet's"
    scale = net.config.scale
    raise WeightsError(f"it holds {found} weights, not {name}'s (BiFPN {scale.fpn_channels} wide, {scale.fpn_repeats} "
                       f"cells, on {scale.backbone})")  # fmt: skip
