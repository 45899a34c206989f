"""The EfficientNet family: stage tables, the scaling rule, configs, the registry, the network."""

from effnet.core.lazy import lazy_exports

_EXPORTS = {
    "EfficientNet": "effnet.models.efficientnet",
    "ModelConfig": "effnet.models.config",
    "create_model": "effnet.models.registry",
    "build_model": "effnet.models.registry",
    "list_models": "effnet.models.registry",
    "resolve_config": "effnet.models.registry",
    "fuse_batchnorm": "effnet.models.fuse",
    "count_macs": "effnet.models.flops",
    "count_params": "effnet.models.flops",
    "Preprocessing": "effnet.models.preprocessing",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
