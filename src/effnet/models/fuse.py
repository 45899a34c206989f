"""The inference form: BatchNorm folded into the preceding convolution.

In eval mode BN is a per-channel affine map, so it can be absorbed into the conv's weight and
bias; that saves one full pass over every activation tensor. The result is for inference
only: it has no BN statistics to update, so it cannot be trained further.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from effnet.models.bifpn import SeparableConv
from effnet.models.blocks import FusedMBConv, MBConv
from effnet.models.layers import ConvBNAct

_PAIRS = {
    MBConv: (("expand_conv", "expand_bn"), ("dw_conv", "dw_bn"), ("project_conv", "project_bn")),
    FusedMBConv: (("fused_conv", "fused_bn"), ("project_conv", "project_bn")),
    ConvBNAct: (("conv", "bn"),),
    SeparableConv: (("pw", "bn"),),  # EfficientDet's BiFPN nodes (its heads' are BN-less: shared by levels)
}


def fuse_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (eval mode) with every conv+BN pair folded into one conv."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in model.modules():
        for conv_name, bn_name in _PAIRS.get(type(module), ()):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if conv is None or isinstance(bn, nn.Identity):
                continue
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    model.fused = True
    return model
