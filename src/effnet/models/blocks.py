"""The MBConv block (inverted residual with squeeze-and-excitation), EfficientNet's only block."""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.architecture import BlockArgs
from effnet.models.layers import DropPath, SqueezeExcite, activation, conv2d


class MBConv(nn.Module):
    """1x1 expand -> kxk depthwise -> SE -> 1x1 project, with a residual when shapes allow.

    With ``expand_ratio == 1`` (the first stage, "MBConv1") the expansion is skipped, which
    is what every reference does and what keeps parameter counts equal to theirs.
    """

    def __init__(self, args: BlockArgs, *, act: str, bn_eps: float, bn_momentum: float, padding: str):
        super().__init__()
        hidden = args.hidden_channels
        bn = dict(eps=bn_eps, momentum=bn_momentum)
        if args.expand_ratio != 1:
            self.expand_conv = conv2d(args.in_channels, hidden, 1)
            self.expand_bn = nn.BatchNorm2d(hidden, **bn)
        else:
            self.expand_conv = None
            self.expand_bn = None
        self.dw_conv = conv2d(hidden, hidden, args.kernel_size, args.stride, groups=hidden, padding=padding)
        self.dw_bn = nn.BatchNorm2d(hidden, **bn)
        self.act = activation(act)
        self.se = SqueezeExcite(hidden, args.se_channels, act) if args.se_channels else None
        self.project_conv = conv2d(hidden, args.out_channels, 1)
        self.project_bn = nn.BatchNorm2d(args.out_channels, **bn)
        self.has_residual = args.stride == 1 and args.in_channels == args.out_channels
        self.drop_path = DropPath(args.drop_path) if self.has_residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.expand_conv is not None:
            x = self.act(self.expand_bn(self.expand_conv(x)))
        x = self.act(self.dw_bn(self.dw_conv(x)))
        if self.se is not None:
            x = self.se(x)
        # No activation after the projection: the "linear bottleneck" of MobileNetV2.
        x = self.project_bn(self.project_conv(x))
        if self.drop_path is not None:
            x = self.drop_path(x) + shortcut
        return x
