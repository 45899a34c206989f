import atexit
import contextlib
import dataclasses
import importlib
import io
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one worker per core: each worker (and the commands it starts) computes on
    # one thread, or two workers' thread pools would fight over the two cores.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

# Pretrained weights are cached under EFFNET_HOME: the suite gets its own, empty at the start,
# shared by the xdist workers (they inherit the environment of the process that imports this
# first), removed at the end. Nothing reaches the network unless a test turns EFFNET_OFFLINE off
# for its own local server.
if "EFFNET_HOME" not in os.environ:
    os.environ["EFFNET_HOME"] = tempfile.mkdtemp(prefix="effnet-test-home-")
    atexit.register(shutil.rmtree, os.environ["EFFNET_HOME"], True)
os.environ.setdefault("EFFNET_OFFLINE", "1")


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous under parallel workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- skips that tell the truth -------------------------------------------------------------------
# A test that cannot run because a component it needs is missing (Fashion-MNIST, chromium,
# OpenVINO, PostgreSQL, an extra's package) skips on a developer's machine, but under CI (CI set,
# as `bash .ci/run` runs with CI=true) the component was meant to be installed: such a skip is a
# failure there. Only skips declared optional (reason starting with OPTIONAL: EFFNET_HUGE_TESTS,
# a GPU) still skip under CI. The hook below enforces it for every skip, however it was raised.
OPTIONAL = "optional: "
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_component(name: str, available: bool, why: str) -> None:
    """Skip the test when ``name`` is missing, or fail it under CI, where it must be installed."""
    if available:
        return
    message = f"required component {name} is missing: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI is set: a missing required component fails)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def import_required(module: str, why: str = "pip install -e '.[dev]' installs it"):
    """``pytest.importorskip`` for a required package: under CI its absence fails the test."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = str(exc)
    require_component(module, False, f"{why} ({error})")


def requires(name: str, available: bool, why: str):
    """A mark: the test needs ``name`` (checked at set-up by require_component)."""
    return pytest.mark.requires(name, available, why)


def optional_skipif(condition: bool, reason: str):
    """A skip that CI allows too: for tests the README calls optional (EFFNET_HUGE_TESTS, a GPU)."""
    return pytest.mark.skipif(condition, reason=OPTIONAL + reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(name, available, why): a required component; see require_component")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires"):
        require_component(*mark.args)


def _fail_required_skip(report, where: str) -> None:
    if not (IN_CI and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if reason.removeprefix("Skipped: ").startswith(OPTIONAL):
        return
    report.outcome = "failed"
    report.longrepr = f"{where}: skipped under CI, but only optional tests may skip there: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, a skip that is not declared optional (a bare pytest.skip, pytest.importorskip or
    skipif of a required component) is reported as a failure."""
    outcome = yield
    _fail_required_skip(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (a module-level importorskip)."""
    outcome = yield
    _fail_required_skip(outcome.get_result(), collector.nodeid)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def give_bn_real_statistics(model: torch.nn.Module, side: int, batch: int = 4, damp_residuals: bool = False,
                            damped: set[int] | None = None) -> None:  # fmt: skip
    """A freshly initialised EfficientNet outputs logits of ~1e-14 in eval mode, so any
    tolerance would pass. Random BN affines plus running statistics measured on a batch
    make every layer's eval output non-trivial.

    ``damp_residuals`` keeps the deepest members (B5-B7, 39-55 blocks) well conditioned, as
    trained weights are: with unit-scale residual branches their random outputs grow to
    ~1e2 and float32 rounding alone then moves them by ~1e-3 of that."""
    from effnet.models.blocks import INVERTED_RESIDUALS

    damped = set(damped or ())  # ids of BNs to damp, for models other than effnet's (a peer's)
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


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A folder that ``make(folder)`` fills once per test session, whichever pytest-xdist worker
    asks first; the others wait for it on a file lock and share it (for fixtures that cost
    seconds: trained models, exports). Tests that change a file in it copy the file first."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' shared folder
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def trained_once(tmp_path_factory, name: str, *train_args) -> Path:
    """``effnet train ARGS`` run once per test session (``made_once``; each training costs ~6-9 s)."""
    folder = made_once(tmp_path_factory, f"trained-{name}",
                       lambda run: run_cli("train", *train_args, "--out", run, "--quiet").check())  # fmt: skip
    return folder / "best.safetensors"


@pytest.fixture(scope="session")
def digits_weights(tmp_path_factory):
    """A small model that has learned digits, so that the compression commands have accuracy to
    keep or lose: the short recipe's defaults, 2 epochs (measured: 0.910 validation and 0.922 test
    top-1, ~6 s). The former one epoch on 320 images scored 0.095 on the test split: at chance."""
    return trained_once(tmp_path_factory, "digits", "--phi", "-3", "--data", "digits", "--image-size", "32",
                        "--epochs", "2")  # fmt: skip


@pytest.fixture(scope="session")
def small_digits_weights(tmp_path_factory):
    """``digits_weights``' recipe on a smaller network (depth 0.1: one block per stage, width
    0.5), for the tests whose cost is a converter's passes over every node (LiteRT, ExecuTorch):
    0.94 test top-1 measured, ~9 s."""
    return trained_once(tmp_path_factory, "small-digits", "--phi", "-3", "--depth", "0.1", "--width", "0.5",
                        "--data", "digits", "--image-size", "32", "--epochs", "2")  # fmt: skip
