"""Bad input, failed runs and interruptions: each gives one ``effnet: error:`` line on stderr (never
a traceback), exit code 2 for usage errors and 1 for a run that failed after it started, and
leaves nothing half-written behind.

The CLI runs in-process (``main([...])``) except where the process itself is under test
(a FIFO that could block, Ctrl-C, a second process on a locked run)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from effnet.cli.main import main

TINY = ["--phi", "-3", "--data", "digits", "--image-size", "32", "--batch-size", "16", "--quiet"]
TINY_TRAIN = [*TINY, "--limit-train", "64", "--epochs", "1"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``effnet ARGV`` in this process: (exit code, stdout, stderr); argparse's exits included."""
    capsys.readouterr()  # drop whatever earlier steps printed
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err: str) -> str:
    """The single non-empty stderr line, which must be an ``effnet: error:`` line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("effnet: error:"), lines[0]
    return lines[0]


def usage_error(err: str) -> str:
    """argparse's usage message: the last line says what is wrong; no traceback."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "error:" in last, err
    return last


def tmp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.tmp"))


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny digits run, trained in-process into a folder that a save killed midway left behind
    (its lock, a stale temporary and no config.json): case 14 is this fixture's own start."""
    run = tmp_path_factory.mktemp("trained") / "run"
    run.mkdir()
    (run / ".lock").write_text("effnet process 1")  # a lock file marks the folder as a run's
    (run / ".state.pt.k1ll3d.tmp").write_bytes(b"half a state")
    assert main(["train", *TINY_TRAIN, "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def weights(trained) -> Path:
    return trained / "best.safetensors"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


def rewrite_metadata(source: Path, target: Path, **changes) -> Path:
    """A copy of ``source`` whose effnet metadata has ``changes`` (JSON-encoded) applied."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), framework="pt") as f:
        metadata = dict(f.metadata())
    for key, value in changes.items():
        if key in ("config", "preprocessing"):
            merged = {**json.loads(metadata[key]), **value}
            metadata[key] = json.dumps(merged)
        else:
            metadata[key] = json.dumps(value)
    save_file(load_file(str(source)), str(target), metadata=metadata)
    return target


# --- 14: a run killed during its first save ---------------------------------------------------


def test_interrupted_first_save_restarts_and_sweeps_the_temporary(trained):
    assert (trained / "config.json").is_file()
    assert (trained / "best.safetensors").is_file()
    assert tmp_files(trained) == []


# --- 1, 2: crafted weights metadata -------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"class_names": "zero"}, "class_names"),
        ({"preprocessing": {"std": [0.229, 0.0, 0.225]}}, "std"),
        ({"preprocessing": {"interpolation": "foo"}}, "interpolation"),
    ],
    ids=["class_names-not-a-list", "std-zero", "interpolation-foo"],
)
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_crafted_metadata_is_refused_naming_the_file(capsys, tmp_path, weights, image, changes, says, command):
    bad = rewrite_metadata(weights, tmp_path / "crafted.safetensors", **changes)
    argv = ["predict", image, "--weights", bad] if command == "predict" else ["eval", "--weights", bad]
    rc, out, err = run_cli(capsys, *argv)
    line = error_line(err)
    assert rc == 2
    assert str(bad) in line and says in line
    assert out == ""


def test_metadata_claiming_a_giant_model_is_refused_before_allocating(capsys, tmp_path, weights, image):
    bad = rewrite_metadata(weights, tmp_path / "giant.safetensors", config={"width": 16.0, "depth": 16.0})
    start = time.perf_counter()
    rc, _, err = run_cli(capsys, "predict", image, "--weights", bad)
    seconds = time.perf_counter() - start
    line = error_line(err)
    assert rc == 2
    assert str(bad) in line and "parameters" in line
    assert seconds < 10, f"took {seconds:.1f} s"


# --- 3: --resume on a damaged run -------------------------------------------------------------


def copy_run(run: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "state.pt"):
        (target / name).write_bytes((run / name).read_bytes())
    return target


def test_resume_with_broken_config_json(capsys, tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "config.json").write_text('{"model": null, "phi": -3,')
    rc, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--quiet")
    line = error_line(err)
    assert rc == 2
    assert "config.json" in line
    assert tmp_files(run) == []


def test_resume_with_garbage_state(capsys, tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "state.pt").write_bytes(os.urandom(4096))
    rc, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--quiet")
    line = error_line(err)
    assert rc == 2
    assert "state.pt" in line
    assert not (run / "best.safetensors").exists()
    assert tmp_files(run) == []


# --- 4: search storage ------------------------------------------------------------------------

SEARCH = ["search", "--data", "digits", "--base-width", "0.25", "--base-depth", "0.25", "--image-size", "32",
          "--epochs", "1", "--limit-train", "32", "--no-wait", "--json"]  # fmt: skip


def optuna_study_names(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "studies" not in tables:
            return []
        return [row[0] for row in connection.execute("SELECT study_name FROM studies")]


def test_read_only_search_database(capsys, tmp_path, monkeypatch):
    import optuna

    monkeypatch.chdir(tmp_path)  # anything written "beside" the database by mistake stays in here
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "search.db"
    optuna.storages.RDBStorage(f"sqlite:///{db}")  # Optuna's tables, no study
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            # root writes through file modes: open the database read-only through SQLite instead
            url = f"sqlite:///file:{db}?mode=ro&uri=true"
        else:
            url = f"sqlite:///{db}"
        rc, out, err = run_cli(capsys, *SEARCH, "--storage", url, "--study", "ro")
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    line = error_line(err)
    assert rc == 2
    assert "--storage" in line
    # SQLite's word for it, or (not root) the lock file beside the database that cannot be made
    assert any(reason in line for reason in ("readonly database", "read-only", "Permission denied")), line
    assert optuna_study_names(db) == []
    assert sorted(p.name for p in folder.iterdir()) == ["search.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_search_with_nan_phi_creates_no_study(capsys, tmp_path):
    import optuna

    db = tmp_path / "search.db"
    optuna.storages.RDBStorage(f"sqlite:///{db}")  # an existing database, so a new study would show
    rc, _, err = run_cli(capsys, *SEARCH, "--phi", "nan", "--storage", f"sqlite:///{db}")
    line = error_line(err)
    assert rc == 2
    assert "--phi" in line
    assert optuna_study_names(db) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:secret@127.0.0.1:1/db",  # no driver, or a refused connection
        "postgresql://user:secret@127.0.0.1:notaport/db",  # a URL sqlalchemy cannot parse
        "nosuchdb://user:secret@127.0.0.1/db",  # an unknown dialect
    ],
)
def test_storage_password_is_not_shown(capsys, url):
    rc, _, err = run_cli(capsys, *SEARCH, "--storage", url)
    line = error_line(err)
    assert rc == 2
    assert "--storage" in line and "127.0.0.1" in line
    assert "secret" not in err


# --- 5, 7, 8: bad options -----------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [("--augment", "foo"), ("--seed", "-1")])
def test_bad_train_option_writes_nothing(capsys, tmp_path, option, value):
    run = tmp_path / "run"
    rc, _, err = run_cli(capsys, "train", *TINY_TRAIN, "--out", run, option, value)
    line = error_line(err)
    assert rc == 2
    assert option in line
    assert not run.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--progressive", "0", "--start-size", "16"],
            "--progressive must be a number of stages from 1 to --epochs (1)",
        ),
        (
            ["--progressive", "2", "--start-size", "16"],
            "--progressive must be a number of stages from 1 to --epochs (1)",
        ),
        (["--progressive", "1"], "--progressive needs --start-size PX"),
        (["--progressive", "1", "--start-size", "0"], "--start-size must be at least 8 pixels, got 0"),
        (["--progressive", "1", "--start-size", "-16"], "--start-size must be at least 8 pixels, got -16"),
        (["--progressive", "1", "--start-size", "48"], "--start-size 48 is larger than the end, --image-size 32"),
        (["--start-size", "16"], "--start-size needs --progressive STAGES"),
        (
            ["--progressive", "1", "--start-size", "16", "--start-dropout", "0.5", "--dropout", "0.2"],
            "--start-dropout 0.5 is larger than the end, --dropout 0.2",
        ),
        (["--progressive", "1", "--start-size", "16", "--start-randaug", "4"], "--start-randaug needs --randaug"),
        (["--randaug", "31"], "--randaug must be a RandAugment magnitude in 0..30"),
        (["--randaug", "5", "--augment", "none"], "--randaug needs an augmentation"),
        (["--random-erase", "0.5", "--augment", "none"], "--random-erase needs an augmentation"),
        (["--random-erase", "1.5"], "--random-erase=1.5 is out of range"),
        (
            ["--progressive", "1", "--start-size", "16", "--teacher", "t.safetensors", "--cache-teacher"],
            "--cache-teacher cannot follow --progressive",
        ),
    ],
)
def test_bad_progressive_learning_writes_nothing(capsys, tmp_path, options, message):
    run = tmp_path / "run"
    rc, _, err = run_cli(capsys, "train", *TINY_TRAIN, "--out", run, *options)
    assert rc == 2 and message in error_line(err)
    assert not run.exists()


def test_progressive_start_size_above_the_models_resolution(capsys, tmp_path):
    # Without --image-size the end is the model's resolution, known once the model is built.
    run = tmp_path / "run"
    argv = ["--phi", "-3", "--data", "digits", "--limit-train", "64", "--epochs", "1", "--quiet"]
    rc, _, err = run_cli(capsys, "train", *argv, "--out", run, "--progressive", "1", "--start-size", "512")
    assert rc == 2 and "--start-size 512 is larger than the end, the image size 147" in error_line(err)
    assert not run.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--weights", "w.safetensors", "--batch-size", "0"],
        ["export", "--model", "efficientnet_b0", "--out", "m.onnx", "--image-size", "0"],
    ],
    ids=["eval-batch-size-0", "export-image-size-0"],
)
def test_zero_sizes_are_usage_errors(capsys, tmp_path, argv):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2
    assert "must be at least 1" in usage_error(err)


def test_export_opset_out_of_range(capsys, tmp_path, weights):
    out = tmp_path / "m.onnx"
    rc, _, err = run_cli(capsys, "export", "--weights", weights, "--out", out, "--opset", "99")
    line = error_line(err)
    assert rc == 2
    assert "--opset 99" in line
    assert list(tmp_path.iterdir()) == []


def test_export_format_contradicting_the_file_name(capsys, tmp_path, weights):
    out = tmp_path / "x.onnx"
    rc, _, err = run_cli(capsys, "export", "--weights", weights, "--format", "torchscript", "--out", out)
    line = error_line(err)
    assert rc == 2
    assert str(out) in line and "torchscript" in line
    assert list(tmp_path.iterdir()) == []


# --- 6: --plot that cannot be written -----------------------------------------------------------


def test_eval_plot_to_a_directory_fails_before_evaluating(capsys, tmp_path, weights, monkeypatch):
    import effnet.deploy.evaluate

    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluated although --plot cannot be written")

    monkeypatch.setattr(effnet.deploy.evaluate, "evaluate", must_not_run)
    plot = tmp_path / "plots"
    plot.mkdir()
    start = time.perf_counter()
    rc, _, err = run_cli(capsys, "eval", "--weights", weights, "--plot", plot)
    seconds = time.perf_counter() - start
    line = error_line(err)
    assert rc == 2
    assert "--plot" in line and str(plot) in line
    assert list(tmp_path.rglob("*.png")) == []
    assert seconds < 10, f"took {seconds:.1f} s"


# --- 9: a FIFO given as an image ----------------------------------------------------------------


def test_predict_on_a_fifo_does_not_hang(tmp_path, weights):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "effnet", "predict", str(fifo), "--weights", str(weights)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd=tmp_path)
    line = error_line(proc.stderr)
    assert proc.returncode == 2
    assert str(fifo) in line


# --- 10: effnet data check ----------------------------------------------------------------------


def test_data_check_lists_unusable_entries(capsys, tmp_path):
    from PIL import Image

    tree = tmp_path / "tree"
    for name in ("cat", "dog"):
        (tree / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (10, 20, 30)).save(tree / name / "ok.png")
    (tree / "empty").mkdir()
    (tree / "cat" / "gone.png").symlink_to(tree / "cat" / "missing.png")
    (tree / "dog" / "loop.png").symlink_to(tree / "dog" / "loop.png")
    os.mkfifo(tree / "dog" / "pipe.png")

    rc, out, err = run_cli(capsys, "data", "check", tree, "--json")
    assert rc == 1
    assert "Traceback" not in err
    report = json.loads(out)
    reasons = {Path(bad["path"]).name: bad["reason"] for bad in report["bad"]}
    assert report["good"] == 2
    assert set(reasons) == {"empty", "gone.png", "loop.png", "pipe.png"}
    assert "empty class folder" in reasons["empty"]
    assert "broken symbolic link" in reasons["gone.png"]
    assert "cannot be read" in reasons["loop.png"]
    assert "FIFO" in reasons["pipe.png"]


# --- 11, 12: a second trainer on a busy run, then Ctrl-C ----------------------------------------


def read_stderr_until(proc: subprocess.Popen, needle: str, seconds: float) -> str:
    """stderr of ``proc`` up to the first line containing ``needle`` (or the deadline)."""
    seen, deadline = "", time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if needle in line:
                break
    return seen


def test_busy_run_is_refused_and_ctrl_c_leaves_a_resumable_run(capsys, tmp_path):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--limit-train", "64", "--epochs", "50", "--out", str(run)]
    argv.remove("--quiet")  # the per-epoch lines say when training is under way
    # A shell starts background jobs (make test &, nohup ... &) with SIGINT ignored, and children
    # inherit that; the run under test is a foreground command, where Ctrl-C is delivered.
    proc = subprocess.Popen([sys.executable, "-m", "effnet", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=subprocess_env(), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        seen = read_stderr_until(proc, "epoch 1/", 60)
        assert proc.poll() is None, f"training ended early ({proc.returncode}):\n{seen}{proc.stderr.read()}"
        assert (run / "config.json").is_file()

        # 12: a second process may not write to a run the first one is training
        rc, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--quiet")
        line = error_line(err)
        assert rc == 2
        assert "in use" in line and str(proc.pid) in line

        # 11: Ctrl-C
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen + rest
    assert "Traceback" not in rest
    assert "interrupted" in rest and "--resume" in rest
    assert tmp_files(run) == []
    assert (run / "state.pt").is_file()


# --- 13: the disk fills up mid-run --------------------------------------------------------------


def test_disk_full_during_training(capsys, tmp_path, monkeypatch):
    import effnet.weights.io
    from effnet.core.fileio import atomic_write

    def full_disk(path, write):
        def partial(f):
            f.write(b"\0" * 4096)  # some of the file reached the disk, then it was full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        atomic_write(path, partial)

    # the weights files, written at the end of the first epoch: after config.json and state.pt
    monkeypatch.setattr(effnet.weights.io, "atomic_write", full_disk)
    run = tmp_path / "run"
    rc, _, err = run_cli(capsys, "train", *TINY_TRAIN, "--out", run)
    line = error_line(err)
    assert rc == 1
    assert "No space left" in line
    assert tmp_files(run) == []
    assert not (run / "best.safetensors").exists()
    state = torch.load(run / "state.pt", weights_only=True)  # the run is still resumable from its last state
    assert state["epoch"] == 0


# --- 15: divergence ------------------------------------------------------------------------------


def test_divergence_is_a_failed_run_without_best_weights(capsys, tmp_path):
    run = tmp_path / "run"
    rc, _, err = run_cli(capsys, "train", *TINY_TRAIN, "--out", run, "--lr", "1e30")
    line = error_line(err)
    assert rc == 1
    assert any(word in line for word in ("diverged", "non-finite")), line
    assert not (run / "best.safetensors").exists()
    assert not (run / "last.safetensors").exists()
    assert tmp_files(run) == []


# --- 16: a static-batch ONNX export evaluated -----------------------------------------------------


def test_eval_on_a_static_batch_export_matches_the_dynamic_one(capsys, tmp_path, weights):
    static, dynamic = tmp_path / "static.onnx", tmp_path / "dynamic.onnx"
    assert run_cli(capsys, "export", "--weights", weights, "--out", static)[0] == 0
    assert run_cli(capsys, "export", "--weights", weights, "--out", dynamic, "--dynamic-batch")[0] == 0
    results = {}
    for path in (static, dynamic):
        rc, out, err = run_cli(capsys, "eval", "--weights", path, "--json", "--batch-size", "50")
        assert rc == 0, err
        results[path.name] = json.loads(out)
    assert results["static.onnx"]["n"] == results["dynamic.onnx"]["n"] > 50  # more than one chunk, one padded
    assert results["static.onnx"]["top1"] == results["dynamic.onnx"]["top1"]


# --- 17: fewer training images than one batch ---------------------------------------------------


def test_training_set_smaller_than_one_batch_trains_with_a_warning(capsys, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--phi", "-3", "--data", "digits", "--image-size", "32", "--limit-train", "10",
            "--batch-size", "64", "--epochs", "1", "--quiet", "--out", run]  # fmt: skip
    with pytest.warns(UserWarning, match="fewer than one step"):
        rc, _, err = run_cli(capsys, *argv)
    assert rc == 0, err
    assert (run / "best.safetensors").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and the one epoch


def test_ctrl_c_during_a_save_lands_after_it(tmp_path):
    """SIGINT in the middle of torch.save's zip writer used to surface as a RuntimeError from the
    writer's clean-up (a traceback, rc 1); now the save completes and Ctrl-C takes effect after."""
    import os
    import signal

    import torch

    from effnet.core.fileio import atomic_write

    target = tmp_path / "state.pt"

    def write(f):
        torch.save({"a": torch.zeros(1000)}, f)
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the file is still being written
        torch.save({"b": torch.ones(1000)}, f)

    # As in a foreground command: a test run started as a background job has SIGINT ignored.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(target, write)
    finally:
        restored = signal.signal(signal.SIGINT, inherited)
    assert target.is_file()  # the write finished and was renamed into place before the interrupt
    assert not list(tmp_path.glob(".*.tmp"))
    assert restored is signal.default_int_handler  # atomic_write put back the handler it found
