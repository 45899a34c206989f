import contextlib
import dataclasses
import io
import os
import socket

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one worker per core: each worker (and the commands it starts) computes on
    # one thread, or two workers' thread pools would fight over the two cores.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous under parallel workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def give_bn_real_statistics(model: torch.nn.Module, side: int, batch: int = 4, damp_residuals: bool = False) -> None:
    """A freshly initialised EfficientNet outputs logits of ~1e-14 in eval mode, so any
    tolerance would pass. Random BN affines plus running statistics measured on a batch
    make every layer's eval output non-trivial.

    ``damp_residuals`` keeps the deepest members (B5-B7, 39-55 blocks) well conditioned, as
    trained weights are: with unit-scale residual branches their random outputs grow to
    ~1e2 and float32 rounding alone then moves them by ~1e-3 of that."""
    from effnet.models.blocks import INVERTED_RESIDUALS

    damped = set()
    if damp_residuals:
        residual = [b for b in model.modules() if isinstance(b, INVERTED_RESIDUALS) and b.has_residual]
        # The branch's last BN: the projection's, or a Fused-MBConv1's only one.
        damped = {id(b.project_bn if b.project_bn is not None else b.fused_bn) for b in residual}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics exactly
            m.reset_running_stats()
            low, high = (0.05, 0.2) if id(m) in damped else (0.5, 1.5)
            torch.nn.init.uniform_(m.weight, low, high)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, side, side))
    model.eval()


@dataclasses.dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> "CliResult":
        assert self.returncode == 0, self.stderr[-3000:]
        return self


def run_cli(*args) -> CliResult:
    """``effnet ARGS`` run in this process: the same code path as the command (effnet.cli.main),
    without the 3-4 s of a new interpreter importing torch. Tests that need a real process (kill
    -9, signals, torchrun, two workers at once, import time) start one instead."""
    from effnet.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(code, out.getvalue(), err.getvalue())
