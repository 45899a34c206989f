"""``--compile``: the training forward (and with it the backward) through ``torch.compile``, with
eager as the fallback when the compiler is missing or fails, so a run never stops for it."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from effnet.core.errors import EffnetWarning


class CompiledOrEager(nn.Module):
    """Calls ``torch.compile(module)``; if its first call fails (no C++ compiler, an operator the
    compiler cannot take), warns once and calls ``module`` itself from then on. The compiler
    builds its graphs before running any of them, so a failed first call has changed nothing.
    Saving and loading go through the module itself, never this wrapper."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module)
        self.state = "untried"  # untried -> compiled | eager

    def forward(self, *args, **kwargs):
        if self.state == "eager":
            return self.module(*args, **kwargs)
        if self.state == "compiled":
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever the compiler raises, eager still trains
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"--compile: torch.compile failed ({type(exc).__name__}: {reason}); training eagerly",
                          EffnetWarning, stacklevel=2)  # fmt: skip
            torch._dynamo.reset()
            self.state = "eager"
            return self.module(*args, **kwargs)
        self.state = "compiled"
        return out
