"""effnet: the EfficientNet family from one baseline table and the compound-scaling rule.

The package is layered, and each layer imports only from those below it (``make lint`` checks
it with import-linter):

    core -> models -> weights -> datasets -> tasks -> training | deploy -> search | compress -> cli

The top level is the small API a user needs: build (``create_model``, ``list_models``), open any
file, tag or engine (``open``), ``save``, train (``fit`` for your own module and data, ``train``
for a ``TrainConfig``), ``evaluate``, ``predict``, ``export``, and the task registry
(``task_names``, ``register_task``). Everything else lives in its package (``effnet.models``,
``effnet.weights``, ``effnet.deploy``, ...). The names are loaded on first use (PEP 562), so
``import effnet`` and ``effnet --help`` do not pay for torch until a model is actually needed.
"""

from __future__ import annotations

from effnet.core.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "create_model": "effnet.weights.pretrained",  # the models' own, plus pretrained=
    "load_pretrained": "effnet.weights.pretrained",
    "list_models": "effnet.models.registry",
    "open": "effnet.deploy.engines",
    "save": "effnet.weights.io",
    "fit": "effnet.training.fit",
    "train": "effnet.training.launch",
    "evaluate": "effnet.deploy.evaluate",
    "predict": "effnet.deploy.predict",
    "export": "effnet.deploy.export",
    "task_names": "effnet.tasks.registry",
    "register_task": "effnet.tasks.registry",
    "UsageError": "effnet.core.errors",
    "WeightsError": "effnet.core.errors",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
