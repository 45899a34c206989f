"""EfficientNet's two blocks: MBConv (V1 and V2) and its V2 sibling Fused-MBConv.

Both are inverted residuals with the same parts around them (a residual with stochastic depth
when the shapes allow, a linear 1x1 projection); they differ in how the expansion is made.
"""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.architecture import BlockArgs
from effnet.models.layers import DropPath, SqueezeExcite, activation, conv2d


class _InvertedResidual(nn.Module):
    """What both blocks share: the residual and its stochastic depth."""

    def __init__(self, args: BlockArgs):
        super().__init__()
        self.in_channels = args.in_channels
        self.has_residual = args.stride == 1 and args.in_channels == args.out_channels
        self.drop_path = DropPath(args.drop_path) if self.has_residual else None

    @property
    def expansion_conv(self) -> nn.Conv2d | None:
        """The conv whose outputs are the expansion channels (what structured pruning removes);
        None when the block has no expansion."""
        raise NotImplementedError

    @property
    def hidden_channels(self) -> int:
        """The expansion width as built: what a pruned model's config records for this block
        (a block without an expansion records its input width, which scale_stages ignores)."""
        conv = self.expansion_conv
        return conv.out_channels if conv is not None else self.in_channels

    def join(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return self.drop_path(x) + shortcut if self.drop_path is not None else x


class MBConv(_InvertedResidual):
    """1x1 expand -> kxk depthwise -> SE -> 1x1 project, with a residual when shapes allow.

    With ``expand_ratio == 1`` (the first stage, "MBConv1") the expansion is skipped, which
    is what every reference does and what keeps parameter counts equal to theirs.
    """

    def __init__(self, args: BlockArgs, *, act: str, bn_eps: float, bn_momentum: float, padding: str):
        super().__init__(args)
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

    @property
    def expansion_conv(self) -> nn.Conv2d | None:
        return self.expand_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.expand_conv is not None:
            x = self.act(self.expand_bn(self.expand_conv(x)))
        x = self.act(self.dw_bn(self.dw_conv(x)))
        if self.se is not None:
            x = self.se(x)
        # No activation after the projection: the "linear bottleneck" of MobileNetV2.
        x = self.project_bn(self.project_conv(x))
        return self.join(x, shortcut)


class FusedMBConv(_InvertedResidual):
    """kxk conv (expands and strides in one dense conv) -> 1x1 project; no depthwise, no SE.

    V2 uses it in the early stages, where a depthwise conv's few FLOPs run poorly on
    accelerators. With ``expand_ratio == 1`` the kxk conv maps straight to the output channels
    and keeps its activation, and there is no projection (torchvision, timm and automl agree).
    """

    def __init__(self, args: BlockArgs, *, act: str, bn_eps: float, bn_momentum: float, padding: str):
        super().__init__(args)
        expands = args.expand_ratio != 1
        hidden = args.hidden_channels if expands else args.out_channels
        bn = dict(eps=bn_eps, momentum=bn_momentum)
        self.fused_conv = conv2d(args.in_channels, hidden, args.kernel_size, args.stride, padding=padding)
        self.fused_bn = nn.BatchNorm2d(hidden, **bn)
        self.act = activation(act)
        self.project_conv = conv2d(hidden, args.out_channels, 1) if expands else None
        self.project_bn = nn.BatchNorm2d(args.out_channels, **bn) if expands else None

    @property
    def expansion_conv(self) -> nn.Conv2d | None:
        return self.fused_conv if self.project_conv is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act(self.fused_bn(self.fused_conv(x)))
        if self.project_conv is not None:
            x = self.project_bn(self.project_conv(x))
        return self.join(x, shortcut)


BLOCK_TYPES: dict[str, type[_InvertedResidual]] = {"mbconv": MBConv, "fused": FusedMBConv}
INVERTED_RESIDUALS = (MBConv, FusedMBConv)
