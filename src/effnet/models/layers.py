"""Small building blocks shared by the EfficientNet model and its blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dSame(nn.Conv2d):
    """Conv with TensorFlow's SAME padding: extra padding goes bottom/right.

    Only strided convs need this (for stride 1 and odd kernels SAME is symmetric), so the
    symmetric default path never pays for the pad computation. The pad amounts are plain
    integer arithmetic on the input shape, which ONNX and torch.export trace as shape ops.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pad_h = _same_pad(ih, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_pad(iw, self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    # (ceil(size / stride) - 1) * stride + span - size, written without ceil or max so that
    # export traces it as one modulo rather than a nest of guards; span >= stride here.
    span = (kernel - 1) * dilation + 1
    return span - stride + (-size) % stride


class MaxPool2dSame(nn.MaxPool2d):
    """Max-pool with TensorFlow's SAME padding (extra bottom/right), padded with -inf so the pad
    never wins: EfficientDet's downsampling between BiFPN levels in its TF form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pad_h = _same_pad(ih, self.kernel_size, self.stride, 1)
        pad_w = _same_pad(iw, self.kernel_size, self.stride, 1)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


def max_pool2d(kernel: int, stride: int, padding: str = "symmetric") -> nn.MaxPool2d:
    if padding == "same":
        return MaxPool2dSame(kernel, stride)
    return nn.MaxPool2d(kernel, stride, padding=(kernel - 1) // 2)


def conv2d(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    if padding == "same" and stride > 1:
        return Conv2dSame(in_ch, out_ch, kernel, stride, padding=0, groups=groups, bias=bias)
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=bias)


def activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


class ConvBNAct(nn.Module):
    """Conv, BatchNorm, activation: the stem and the head."""

    def __init__(self, in_ch, out_ch, kernel, stride, *, act: str, bn_eps, bn_momentum, padding):
        super().__init__()
        self.conv = conv2d(in_ch, out_ch, kernel, stride, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck of ``squeeze`` channels, sigmoid gate."""

    def __init__(self, channels: int, squeeze: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.act = activation(act)
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(self.act(self.reduce(s)))
        return x * s.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def init_weights(module: nn.Module) -> None:
    """The TF reference's initialisation: fan-out normal convs, uniform classifier.

    The reference draws the classifier from U(±1/sqrt(classes)), which gives logits of order one
    only because ImageNet's 1000 classes are about as many as the head's features. With 10
    classes the first logits are ~10x too large (first-epoch loss above ln 10) and early
    training is spent shrinking them: on an 8k Fashion-MNIST subset, 3 epochs reached 76.5%
    validation top-1 with the reference range and 80.7% with this one. The range is therefore
    1/sqrt(max(classes, features)): the reference's when classes outnumber features.
    """
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(max(module.out_features, module.in_features))
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)
