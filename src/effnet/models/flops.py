"""Parameter and multiply-accumulate counts, the paper's two cost measures.

MACs come from ``torch.utils.flop_counter`` run on the meta device: no memory and no
arithmetic, so even L2 at 800 px is counted in well under a second. The counter reports
FLOPs = 2 x MACs for convolutions and matmuls and ignores elementwise ops (BN, activations,
the SE gate), which is also what the paper's "FLOPS" column counts.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet.models.config import ModelConfig
from effnet.models.efficientnet import EfficientNet


# count_params and count_macs of one config share one build (building B7 or L2 on the meta device
# still runs every initializer: half of `effnet models`' 11 s went to building each model twice)
@functools.lru_cache(maxsize=64)
def _meta_model(config: ModelConfig):
    with torch.device("meta"):
        return EfficientNet(config).eval()


# Configs are frozen and hashable, and a count depends on nothing else: each is computed once per
# process (L2's MACs take seconds even on the meta device; the search asks for the same shapes again).
@functools.lru_cache(maxsize=1024)
def count_params(config: ModelConfig) -> int:
    return sum(p.numel() for p in _meta_model(config).parameters())


@functools.lru_cache(maxsize=1024)
def count_macs(config: ModelConfig, resolution: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image at ``resolution`` (default: the model's)."""
    side = resolution or config.resolution
    return module_macs(_meta_model(config), (1, config.in_chans, side, side))


def module_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of ``model`` (on the meta device) on one input of ``shape``."""
    x = torch.empty(shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def model_summary(config: ModelConfig) -> dict:
    return {
        "name": config.name,
        "family": config.family,
        "width": config.width,
        "depth": config.depth,
        "resolution": config.resolution,
        "dropout": config.dropout,
        "params": count_params(config),
        "macs": count_macs(config),
    }
