"""effnet: the EfficientNet family from one baseline table and the compound-scaling rule."""

from effnet.architecture import B0_STAGES, StageSpec, scale_stages
from effnet.config import ModelConfig
from effnet.convert import convert_state_dict
from effnet.errors import UsageError, WeightsError
from effnet.flops import count_macs, count_params
from effnet.models import EfficientNet
from effnet.models.fuse import fuse_batchnorm
from effnet.pretrained import load_pretrained
from effnet.registry import create_model, list_models
from effnet.scaling import PUBLISHED, compound_scale, round_channels, round_repeats
from effnet.weights import load, save

__version__ = "0.1.0"

__all__ = [
    "B0_STAGES",
    "PUBLISHED",
    "EfficientNet",
    "ModelConfig",
    "StageSpec",
    "UsageError",
    "WeightsError",
    "compound_scale",
    "convert_state_dict",
    "load",
    "load_pretrained",
    "save",
    "count_macs",
    "count_params",
    "create_model",
    "fuse_batchnorm",
    "list_models",
    "round_channels",
    "round_repeats",
    "scale_stages",
]
