"""The complete description of a model, small enough to travel inside a weights file."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from effnet.core.errors import UsageError
from effnet.models.architecture import FAMILIES

PADDINGS = ("symmetric", "same")


@dataclass(frozen=True)
class ModelConfig:
    """Everything ``EfficientNet`` needs; ``effnet.open`` rebuilds a model from this alone."""

    name: str  # registry name, or "efficientnet_phi<phi>" for formula-scaled models
    family: str = "efficientnet"  # the stage table: "efficientnet", "lite", "efficientnetv2[_s|_m|_l|_xl]"
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224  # the training/eval input side; the network itself is size-agnostic
    dropout: float = 0.2
    num_classes: int = 1000
    in_chans: int = 3
    drop_path_rate: float = 0.2
    # TF trains with BN decay 0.99 and eps 1e-3; PyTorch-trained timm/torchvision B0-B4
    # weights used eps 1e-5, so the eps has to follow the weights.
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    padding: str = "symmetric"  # "same" reproduces TF's asymmetric padding for ported weights
    features_only: bool = False
    out_indices: tuple[int, ...] = (1, 2, 3, 4)
    phi: float | None = None  # set when the model came from the compound-scaling formula
    # Expansion channels per block after structured pruning (None: unpruned). Blocks without
    # an expansion (MBConv1) keep their input width.
    hidden_channels: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise UsageError(f"family must be one of {sorted(FAMILIES)}, got {self.family!r}")
        if self.padding not in PADDINGS:
            raise UsageError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        for name, low, high in (("width", 0.05, 16.0), ("depth", 0.05, 16.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise UsageError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
        if not (isinstance(self.resolution, int) and 8 <= self.resolution <= 4096):
            raise UsageError(f"resolution must be an integer in [8, 4096], got {self.resolution!r}")
        for name in ("dropout", "drop_path_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise UsageError(f"{name} must be in [0, 1), got {value!r}")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 0):
            raise UsageError(f"num_classes must be a non-negative integer, got {self.num_classes!r}")
        if not (isinstance(self.in_chans, int) and self.in_chans >= 1):
            raise UsageError(f"in_chans must be a positive integer, got {self.in_chans!r}")
        if not (isinstance(self.bn_eps, (int, float)) and 0.0 < self.bn_eps < 1.0):
            raise UsageError(f"bn_eps must be in (0, 1), got {self.bn_eps!r}")
        bad = [i for i in self.out_indices if i not in range(5)]
        if bad or not self.out_indices:
            raise UsageError(
                f"out_indices must be a non-empty subset of 0..4 (strides 2..32), got {self.out_indices!r}"
            )
        object.__setattr__(self, "out_indices", tuple(self.out_indices))
        if self.hidden_channels is not None:
            hidden = tuple(self.hidden_channels)
            if not hidden or not all(isinstance(h, int) and h >= 1 for h in hidden):
                raise UsageError(f"hidden_channels must be positive integers, got {self.hidden_channels!r}")
            object.__setattr__(self, "hidden_channels", hidden)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_indices"] = list(self.out_indices)
        if self.hidden_channels is not None:
            d["hidden_channels"] = list(self.hidden_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown model config keys {unknown}")
        d = dict(d)
        for key in ("out_indices", "hidden_channels"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)
