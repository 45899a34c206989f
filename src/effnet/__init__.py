"""effnet: the EfficientNet family from one baseline table and the compound-scaling rule.

The package is layered, and each layer imports only from those below it (``make lint`` checks
it with import-linter):

    core -> models -> weights -> datasets -> tasks -> training | deploy -> search | compress -> cli

The public names below are loaded on first use (PEP 562), so ``import effnet`` and
``effnet --help`` do not pay for torch until a model is actually needed.
"""

from __future__ import annotations

from effnet.core.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "B0_STAGES": "effnet.models.architecture",
    "V2_S_STAGES": "effnet.models.architecture",
    "FAMILIES": "effnet.models.architecture",
    "StageSpec": "effnet.models.architecture",
    "scale_stages": "effnet.models.architecture",
    "ModelConfig": "effnet.models.config",
    "PUBLISHED": "effnet.models.scaling",
    "compound_scale": "effnet.models.scaling",
    "round_channels": "effnet.models.scaling",
    "round_repeats": "effnet.models.scaling",
    "count_macs": "effnet.models.flops",
    "count_params": "effnet.models.flops",
    "EfficientNet": "effnet.models.efficientnet",
    "fuse_batchnorm": "effnet.models.fuse",
    "create_model": "effnet.models.registry",
    "list_models": "effnet.models.registry",
    "UsageError": "effnet.core.errors",
    "WeightsError": "effnet.core.errors",
    "convert_state_dict": "effnet.weights.convert",
    "load": "effnet.weights.io",
    "save": "effnet.weights.io",
    "load_pretrained": "effnet.weights.pretrained",
    "load_trained": "effnet.weights.trained",
    "open": "effnet.deploy.engines",
    "evaluate": "effnet.deploy.evaluate",
    "predict": "effnet.deploy.predict",
    "export": "effnet.deploy.export",
    "train": "effnet.training.launch",
    "task_names": "effnet.tasks.registry",
    "register_task": "effnet.tasks.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
