"""The BiFPN (EfficientDet, section 3): the trunk's P3-P5 plus P6/P7 made from P5, fused top-down
then bottom-up by cells of nodes, each node a weighted sum of resampled inputs followed by
activation, a depthwise-separable 3x3 convolution and BatchNorm.

Built for one input size, as the TF reference is: every node knows the grid of its level, and an
upsampled input is resized to exactly that grid (at 320 px P7 is 3x3 and P6 5x5, so "twice as
large" would be wrong). Operation order follows the reference literally, so that converted
checkpoints give the reference's outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effnet.models.layers import activation, max_pool2d

BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # every BiFPN and head BatchNorm, in every released model


def feature_sizes(image_size: int, max_level: int) -> list[int]:
    """Side of each level's grid, level 0 being the input: halved and rounded up, as SAME-padded
    stride-2 layers do."""
    sizes = [image_size]
    for _ in range(max_level):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


@dataclass(frozen=True)
class Node:
    level: int
    inputs: tuple[int, ...]  # ids: 0..L-1 are the cell's inputs P3..P(L+2), then the nodes in order


def bifpn_nodes(min_level: int, max_level: int) -> list[Node]:
    """The paper's Figure 2d: a top-down pass from P(max-1) to P(min), each node fusing its level
    with the one above; then a bottom-up pass, each node fusing every earlier node of its level
    with the one below. The last node of each level is the cell's output for it."""
    ids = {level: [i] for i, level in enumerate(range(min_level, max_level + 1))}
    count = len(ids)
    nodes = []

    def add(level: int, inputs: list[int]) -> None:
        nonlocal count
        nodes.append(Node(level, tuple(inputs)))
        ids[level].append(count)
        count += 1

    for level in range(max_level - 1, min_level - 1, -1):
        add(level, [ids[level][-1], ids[level + 1][-1]])
    for level in range(min_level + 1, max_level + 1):
        add(level, [*ids[level], ids[level - 1][-1]])
    return nodes


def conv_bn(in_ch: int, out_ch: int, bias: bool) -> nn.Sequential:
    """1x1 convolution and BatchNorm: channels to the BiFPN's width (the bias is redundant before
    BN, but the released checkpoints have it)."""
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(in_ch, out_ch, 1, bias=bias), bn=nn.BatchNorm2d(out_ch, BN_EPS, BN_MOMENTUM))
    )


class SeparableConv(nn.Module):
    """Depthwise 3x3 (no bias), pointwise 1x1, optional BatchNorm."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool, norm: bool):
        super().__init__()
        self.dw = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch, BN_EPS, BN_MOMENTUM) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(self.dw(x)))


class Resample(nn.Module):
    """One input brought to a node's width and grid: a 1x1 conv + BN where the channels differ
    (only the trunk's features), then a 3x3 stride-2 max-pool to a coarser grid or nearest
    upsampling to a finer one."""

    def __init__(self, in_ch: int, out_ch: int, in_size: int, out_size: int, padding: str, bias: bool):
        super().__init__()
        self.conv = conv_bn(in_ch, out_ch, bias) if in_ch != out_ch else None
        self.pool = max_pool2d(3, 2, padding) if in_size > out_size else None
        self.size = out_size if in_size < out_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        if self.pool is not None:
            x = self.pool(x)
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        return x


class FusionNode(nn.Module):
    """Resample the inputs, fuse them (fast normalised weights w_i / (sum w + 1e-4) with
    w = relu(learned), softmax weights, or a plain sum), then act -> separable conv -> BN."""

    def __init__(self, inputs: dict[int, Resample], channels: int, weighting: str, act: str, bias: bool):
        super().__init__()
        self.offsets = list(inputs)
        self.inputs = nn.ModuleDict({str(k): v for k, v in inputs.items()})
        self.weighting = weighting
        self.weights = nn.Parameter(torch.ones(len(inputs))) if weighting != "sum" else None
        self.act = activation(act)
        self.out = SeparableConv(channels, channels, bias=bias, norm=True)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        nodes = [resample(features[k]) for k, resample in zip(self.offsets, self.inputs.values(), strict=True)]
        if self.weighting == "fastattn":
            w = F.relu(self.weights.to(nodes[0].dtype))
            total = w.sum()
            fused = torch.stack([node * w[i] / (total + 1e-4) for i, node in enumerate(nodes)], -1).sum(-1)
        elif self.weighting == "attn":
            fused = (torch.stack(nodes, -1) * torch.softmax(self.weights.to(nodes[0].dtype), 0)).sum(-1)
        else:
            fused = torch.stack(nodes, -1).sum(-1)
        return self.out(self.act(fused))


class BiFPNCell(nn.Module):
    def __init__(self, channels: list[int], sizes: list[int], nodes: list[Node], width: int, *, weighting: str,
                 act: str, padding: str, bias: bool):  # fmt: skip
        super().__init__()
        channels, sizes = list(channels), list(sizes)  # of every id, the nodes' appended as built
        self.levels = len(channels)
        grid = {nodes[-1].level - self.levels + 1 + i: s for i, s in enumerate(sizes)}  # level -> side
        self.nodes = nn.ModuleList()
        for node in nodes:
            size = grid[node.level]
            inputs = {k: Resample(channels[k], width, sizes[k], size, padding, bias) for k in node.inputs}
            self.nodes.append(FusionNode(inputs, width, weighting, act, bias))
            channels.append(width)
            sizes.append(size)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        features = list(features)
        for node in self.nodes:
            features.append(node(features))
        return features[-self.levels :]


class BiFPN(nn.Module):
    """P3..P(max) from the trunk's P3-P5: the extra levels by resampling the one below (P6 from
    P5 through a 1x1 conv + BN and a max-pool, P7 by a max-pool), then ``repeats`` cells."""

    def __init__(self, in_channels: list[int], image_size: int, width: int, repeats: int, *, max_level: int,
                 weighting: str, act: str, padding: str, bias: bool = True, min_level: int = 3):  # fmt: skip
        super().__init__()
        grid = feature_sizes(image_size, max_level)
        sizes = grid[min_level : max_level + 1]
        trunk_levels = len(in_channels)
        channels = list(in_channels)
        self.extra = nn.ModuleList()
        for i in range(trunk_levels, len(sizes)):
            self.extra.append(Resample(channels[-1], width, sizes[i - 1], sizes[i], padding, bias))
            channels.append(width)
        nodes = bifpn_nodes(min_level, max_level)
        self.cells = nn.ModuleList()
        for _ in range(repeats):
            self.cells.append(BiFPNCell(channels, sizes, nodes, width, weighting=weighting, act=act,
                                        padding=padding, bias=bias))  # fmt: skip
            channels = [width] * len(sizes)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        features = list(features)
        for resample in self.extra:
            features.append(resample(features[-1]))
        for cell in self.cells:
            features = cell(features)
        return features
