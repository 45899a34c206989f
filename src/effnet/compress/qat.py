"""Quantization-aware fine-tuning for the int8 export.

The model is trained in the form ONNX Runtime will quantize — BatchNorm folded into the
convolutions — with every convolution and linear layer seeing its weights and its input rounded
as the static QDQ quantizer will round them: weights symmetric int8 with one scale per output
channel, inputs uint8 with one scale per tensor from a running min/max (what calibration
measures). Rounding passes gradients straight through (``torch.fake_quantize_*``), so the
weights move to where rounding costs least. The result is an ordinary float model whose weights
sit on the int8 grid; ``quantize`` then calibrates and quantizes it like any other.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from effnet.core.errors import UsageError
from effnet.datasets.loading import ImageDataset, load_data
from effnet.datasets.transforms import train_transform
from effnet.models.fuse import fuse_batchnorm
from effnet.tasks.classification import ClassificationTask
from effnet.tasks.entry import check_classes
from effnet.training.fit import Recipe, fit


class PerChannelInt8(nn.Module):
    """A weight parametrization: symmetric int8, one scale per output channel."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        amax = weight.detach().abs().amax(dim=tuple(range(1, weight.ndim))).clamp(min=1e-12)
        scale = (amax / 127.0).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


class InputUint8:
    """A forward pre-hook: the layer's input rounded to uint8 with a per-tensor scale from an
    exponential moving min/max (momentum 0.01, as PyTorch's moving-average observers), frozen
    in eval mode."""

    def __init__(self, momentum: float = 0.01):
        self.momentum, self.low, self.high = momentum, None, None

    def __call__(self, module: nn.Module, args):
        x = args[0]
        low, high = (v.item() for v in torch.aminmax(x.detach()))  # one pass over the activation
        if self.low is None:
            self.low, self.high = low, high
        elif module.training:
            self.low += self.momentum * (low - self.low)
            self.high += self.momentum * (high - self.high)
        low, high = min(self.low, 0.0), max(self.high, 0.0)  # zero must be exact
        scale = max(high - low, 1e-8) / 255.0
        zero_point = min(255, max(0, round(-low / scale)))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255), *args[1:])


def quantization_aware_finetune(
    model: nn.Module,
    data_options: dict,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 64,
    limit_train: int | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> nn.Module:
    """Fine-tune a BN-folded copy of ``model`` with int8 rounding in the loop on the trainer core
    (``effnet.training.fit``: AdamW, cosine, light augmentation, the best validation epoch kept);
    returns the folded float model with its weights on the int8 grid."""
    if epochs < 1:
        raise UsageError(f"--qat-epochs must be at least 1, got {epochs}")
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"--qat-lr must be positive, got {lr}")
    bundle = load_data(**data_options, limit_train=limit_train)
    check_classes(model, bundle.classes, "the model", f"--data {data_options['data']}")
    train_set = ImageDataset(bundle.split("train"), train_transform(model.preprocessing, "light"))
    val_set = ImageDataset(bundle.split("val"), model.preprocessing.transform())

    net = fuse_batchnorm(model)  # a copy: the caller's model is left as it was
    net.requires_grad_(True)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = []
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", PerChannelInt8())
        hooks.append(layer.register_forward_pre_hook(InputUint8()))
    recipe = Recipe(epochs=epochs, batch_size=batch_size, opt="adamw", lr=lr, sched="cosine", warmup_epochs=0.0,
                    weight_decay=0.0, ema_decay=0.0, seed=seed)  # fmt: skip
    fit(net, ClassificationTask(len(bundle.classes), label_smoothing=0.1), train_set, val_set, recipe, quiet=quiet)

    for hook in hooks:
        hook.remove()
    for layer in layers:  # keep the rounded weights: the quantizer will find them on its grid
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return net.eval().requires_grad_(False)
