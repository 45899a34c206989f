"""The EfficientNet network (V1 and V2): stem, stages of MBConv / Fused-MBConv blocks, head, classifier."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.core.errors import UsageError
from effnet.models.architecture import FAMILIES, ResolvedArch, scale_stages
from effnet.models.blocks import BLOCK_TYPES
from effnet.models.config import ModelConfig
from effnet.models.layers import ConvBNAct, init_weights
from effnet.models.preprocessing import Preprocessing


class EfficientNet(nn.Module):
    """One class for the whole family; every difference comes from the resolved table.

    ``forward_features`` returns the last feature map, ``forward_head`` pools and classifies.
    With ``features_only`` the head is not built and ``forward`` returns the feature maps
    at ``out_indices`` (level i has stride 2**(i+1)); ``feature_info`` describes them.
    """

    task = "classification"  # what the task registry (effnet.tasks.registry) knows it by

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # Metadata that `effnet.save` writes beside the weights.
        self.class_names: list[str] | None = None
        self.preprocessing = Preprocessing.for_model(config.family, config.resolution)
        self.arch: ResolvedArch = scale_stages(
            FAMILIES[config.family], config.width, config.depth, config.drop_path_rate, config.hidden_channels
        )
        norm = dict(bn_eps=config.bn_eps, bn_momentum=config.bn_momentum, padding=config.padding)
        act = self.arch.activation

        self.stem = ConvBNAct(config.in_chans, self.arch.stem_channels, 3, 2, act=act, **norm)
        stages: list[list[nn.Module]] = []
        for args in self.arch.blocks:
            if args.stage == len(stages):
                stages.append([])
            stages[-1].append(BLOCK_TYPES[args.block](args, act=act, **norm))
        self.feature_info = self._feature_info()
        if config.features_only:
            # Stages past the deepest requested level would never receive a gradient.
            stages = stages[: max(f["stage"] for f in self.feature_info) + 1]
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))

        if config.features_only:
            self.head = self.pool = self.dropout = self.classifier = None
            self.num_features = self.feature_info[-1]["channels"]
        else:
            last = self.arch.blocks[-1].out_channels
            self.head = ConvBNAct(last, self.arch.head_channels, 1, 1, act=act, **norm)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(config.dropout)
            self.num_features = self.arch.head_channels
            self.classifier = nn.Linear(self.num_features, config.num_classes) if config.num_classes else nn.Identity()
        self.apply(init_weights)
        self.memory_efficient = False

    def set_memory_efficient(self, enable: bool = True) -> EfficientNet:
        """Trade compute for memory in training: keep only each block's input and recompute the
        block's activations in the backward pass (activation checkpointing). Inference and export
        are unaffected: the plain modules run whenever gradients are off."""
        self.memory_efficient = enable
        return self

    def _run_stages(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled():
            for block in (b for stage in self.stages for b in stage):
                # Non-reentrant checkpointing replays the RNG, so dropout/drop-path masks are the
                # same in the recomputation and resume stays bitwise.
                x = checkpoint(_ForwardOnceStats(block), x, use_reentrant=False)
            return x
        return self.stages(x)

    def _feature_info(self) -> list[dict]:
        """The last stage at each stride: where segmentation/detection necks attach."""
        reduction = 2  # the stem
        by_level: dict[int, dict] = {}
        for block in self.arch.blocks:
            reduction *= block.stride
            level = reduction.bit_length() - 2  # stride 2 -> level 0, ..., stride 32 -> level 4
            by_level[level] = {
                "level": level,
                "stage": block.stage,
                "channels": block.out_channels,
                "reduction": reduction,
            }
        return [by_level[i] for i in self.config.out_indices]

    @property
    def feature_channels(self) -> list[int]:
        return [f["channels"] for f in self.feature_info]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._run_stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = {f["stage"] for f in self.feature_info}
        out = []
        x = self.stem(x)
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx in wanted:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor):
        if self.config.features_only:
            return self.forward_pyramid(x)
        return self.forward_head(self.forward_features(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset_classifier(self, num_classes: int, class_names: list[str] | None = None) -> EfficientNet:
        """A fresh classifier for ``num_classes`` (0: none, the pooled features come out), as timm's
        ``reset_classifier``; unlike assigning a new ``nn.Linear``, it keeps ``config`` (and so a
        saved file) true to the model. Class names are dropped unless given anew."""
        if self.config.features_only:
            raise UsageError("a features_only model has no classifier to reset")
        if num_classes < 0 or (class_names is not None and len(class_names) != num_classes):
            raise UsageError(f"reset_classifier: {num_classes} classes and {class_names and len(class_names)} names")
        layer = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        layer.apply(init_weights)
        self.classifier = layer.to(self.head.conv.weight.device)
        self.config = replace(self.config, num_classes=num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        return self


class _ForwardOnceStats:
    """Runs a block for checkpointing; the recomputation in backward must not update the BN
    running statistics a second time, or memory-efficient training would drift from plain."""

    def __init__(self, block: nn.Module):
        self.block, self.calls = block, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.block(x)
        norms = [m for m in self.block.modules() if isinstance(m, nn.BatchNorm2d)]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        try:
            for m in norms:
                m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
            return self.block(x)
        finally:
            for m, (momentum, count) in zip(norms, saved, strict=True):
                m.momentum = momentum
                m.num_batches_tracked.copy_(count)
