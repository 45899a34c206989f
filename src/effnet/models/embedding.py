"""Embeddings for verification (faces, or any identities): EfficientNet -> pooled features -> BN ->
FC-512 -> L2 normalisation, trained with an additive angular margin (ArcFace, Deng et al. 2019).

The ArcFace class centres are a submodule (``margin``), so they are trained by the same optimizer,
averaged by the same EMA and saved in the same resume state as the rest; ``forward(images)``
never uses them, so an exported embedder is the embedding alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effnet.core.errors import UsageError
from effnet.models.backbone import name_classes
from effnet.models.config import ModelConfig
from effnet.models.efficientnet import EfficientNet
from effnet.models.preprocessing import Preprocessing
from effnet.models.registry import resolve_config


@dataclass(frozen=True)
class EmbedderConfig:
    backbone: ModelConfig
    embedding_dim: int = 512
    num_classes: int = 0  # identities seen in training (ArcFace centres); 0: none
    margin: float = 0.5  # ArcFace's m, radians
    scale: float = 30.0  # ArcFace's s; 64 in the paper for 85k identities, 30 suits a few classes

    def __post_init__(self):
        backbone = self.backbone if isinstance(self.backbone, ModelConfig) else ModelConfig.from_dict(self.backbone)
        object.__setattr__(self, "backbone", backbone)
        if backbone.features_only or backbone.num_classes:
            raise UsageError("an embedder's backbone must be a plain trunk (num_classes=0, not features_only)")
        if not (isinstance(self.embedding_dim, int) and self.embedding_dim >= 2):
            raise UsageError(f"embedding_dim must be an integer >= 2, got {self.embedding_dim!r}")
        if not (0.0 <= self.margin < math.pi / 2 and self.scale > 0):
            raise UsageError(f"need 0 <= margin < pi/2 and scale > 0, got {self.margin}, {self.scale}")

    @property
    def name(self) -> str:
        return f"embedder_{self.backbone.name}"

    def to_dict(self) -> dict:
        return {**asdict(self), "backbone": self.backbone.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> EmbedderConfig:
        return cls(**d)


class ArcMargin(nn.Module):
    """Cosine logits to the class centres, with cos(theta + m) for each sample's own class."""

    def __init__(self, dim: int, num_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(embeddings.float(), F.normalize(self.weight.float(), dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        target = torch.cos(theta + self.margin)
        # Past theta = pi - m the margin would make the target logit *increase* again (the
        # "easy margin" problem); there fall back to CosFace's linear penalty, as insightface does.
        target = torch.where(theta + self.margin < math.pi, target, cosine - self.margin * math.sin(self.margin))
        one_hot = F.one_hot(labels, cosine.shape[1]).bool()
        return self.scale * torch.where(one_hot, target, cosine)


class Embedder(nn.Module):
    """``forward(images)`` -> unit-length embeddings; ``forward(images, labels)`` (training) ->
    ArcFace logits for cross-entropy."""

    task = "embedding"

    def __init__(self, config: EmbedderConfig):
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None
        trunk = config.backbone
        self.preprocessing = Preprocessing.for_model(trunk.family, trunk.resolution)
        self.trunk = EfficientNet(trunk)
        self.bn = nn.BatchNorm1d(self.trunk.num_features)
        self.fc = nn.Linear(self.trunk.num_features, config.embedding_dim)
        self.margin = (
            ArcMargin(config.embedding_dim, config.num_classes, config.margin, config.scale)
            if config.num_classes
            else None
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.trunk.forward_head(self.trunk.forward_features(x), pre_logits=True)
        return F.normalize(self.fc(self.bn(pooled)), dim=1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.embed(x)
        if labels is None:
            return embeddings
        if self.margin is None:
            raise UsageError("this embedder has no ArcFace centres (num_classes=0); it cannot train")
        return self.margin(embeddings, labels)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_embedder(
    backbone: str | ModelConfig | None = "efficientnet_b0",
    *,
    phi: float | None = None,
    embedding_dim: int = 512,
    num_classes: int = 0,
    resolution: int | None = None,
    margin: float = 0.5,
    scale: float = 30.0,
    class_names: list[str] | None = None,
    **backbone_overrides,
) -> Embedder:
    """An ArcFace embedder on any EfficientNet; ``num_classes`` training identities (0: inference)."""
    if isinstance(backbone, ModelConfig):
        trunk = backbone
    else:
        trunk = resolve_config(backbone, phi=phi, resolution=resolution, **backbone_overrides)
    trunk = ModelConfig.from_dict({**trunk.to_dict(), "num_classes": 0, "features_only": False})
    config = EmbedderConfig(trunk, embedding_dim, num_classes, margin, scale)
    return build_embedder(config, class_names)


def build_embedder(config: EmbedderConfig, class_names: list[str] | None = None) -> Embedder:
    return name_classes(Embedder(config), class_names, config.num_classes, "an embedder")
