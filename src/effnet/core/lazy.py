"""Package namespaces that load their modules on first use (PEP 562).

``effnet --help`` must answer before torch is imported; with eager ``__init__`` files, importing
any light module (a list of CLI choices, say) would first run its package's heavy imports."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for a package whose public ``name`` lives in ``exports[name]``."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
