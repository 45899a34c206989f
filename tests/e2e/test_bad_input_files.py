"""Bad input that concerns files: an output that is an input, a lock file that is a link, a
folder that is not a run, a full disk, a run folder without its first checkpoint. Each is one
``effnet: error:`` line (exit 2 for bad input, 1 for a failed run) and destroys nothing.

The CLI runs in-process except where the process itself is under test (a file-size limit)."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from effnet.cli.main import main
from effnet.core.errors import EffnetWarning, RunError, UsageError
from tests.conftest import import_required
from tests.e2e.test_bad_input import error_line, run_cli

TINY_TRAIN = ["--phi", "-3", "--data", "digits", "--image-size", "32", "--batch-size", "16", "--quiet",
              "--limit-train", "64", "--epochs", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny digits run (~10 s)."""
    path = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY_TRAIN, "--out", str(path)]) == 0
    return path


@pytest.fixture
def weights(run, tmp_path) -> Path:
    """A copy of the run's weights that a test may try to destroy."""
    return Path(shutil.copy(run / "best.safetensors", tmp_path / "model.safetensors"))


def other_name(weights: Path, how: str) -> Path:
    """``weights`` itself, or another name for the same file."""
    if how == "same-path":
        return weights
    alias = weights.with_name("alias.onnx" if how != "relative" else weights.name)
    if how == "hard-link":
        os.link(weights, alias)
    elif how == "symlink":
        alias.symlink_to(weights)
    elif how == "relative":
        return Path(os.path.relpath(weights.parent, Path.cwd())) / ".." / weights.parent.name / weights.name
    return alias


# --- an output that is an input ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["same-path", "hard-link", "symlink", "relative"])
def test_export_onto_its_own_weights_is_refused(capsys, weights, how):
    before = weights.read_bytes()
    out = other_name(weights, how)
    rc, _, err = run_cli(capsys, "export", "--weights", weights, "--out", out)
    line = error_line(err)
    assert rc == 2 and "is the input" in line, line
    assert weights.read_bytes() == before


def test_export_refuses_an_openvino_bin_onto_its_weights(capsys, tmp_path):
    # an IR is two files: its weights go to the .bin beside the .xml, here a state_dict's file
    import_required("openvino")
    from effnet.models.registry import create_model

    bin_weights = tmp_path / "model.bin"
    torch.save(create_model("efficientnet_b0").state_dict(), bin_weights)
    before = bin_weights.read_bytes()
    rc, _, err = run_cli(capsys, "export", "--weights", bin_weights, "--model", "efficientnet_b0", "--image-size",
                         "32", "--out", tmp_path / "model.xml")  # fmt: skip
    line = error_line(err)
    assert rc == 2 and "model.bin is the input" in line, line
    assert bin_weights.read_bytes() == before


def test_prune_onto_its_own_weights_is_refused(capsys, weights):
    before = weights.read_bytes()
    alias = weights.with_name("alias.safetensors")
    os.link(weights, alias)
    for out in (weights, alias):
        rc, _, err = run_cli(capsys, "prune", "--weights", weights, "--ratio", "0.25", "--finetune-epochs", "0",
                             "--out", out)  # fmt: skip
        line = error_line(err)
        assert rc == 2 and "is the input" in line, line
    assert weights.read_bytes() == before


def test_refuse_overwrite_skips_names_that_are_not_files(tmp_path):
    from effnet.core.fileio import refuse_overwrite

    refuse_overwrite(tmp_path / "new.onnx", ["lite0", None, tmp_path / "missing.safetensors"])
    with pytest.raises(UsageError, match="--out .*new.onnx is the input"):
        refuse_overwrite(tmp_path / "new.onnx", [tmp_path / "sub" / ".." / "new.onnx"])


# --- export: the format a file name asks for -------------------------------------------------------


def test_export_with_an_unknown_suffix_needs_format(capsys, tmp_path, weights):
    out = tmp_path / "model.bin"
    rc, _, err = run_cli(capsys, "export", "--weights", weights, "--out", out)
    line = error_line(err)
    assert rc == 2 and ".onnx, .xml, .pt" in line and "--format" in line, line
    assert not out.exists()
    # the API decides alike: the suffix names the format, or it must be given
    from effnet.deploy.export import export
    from effnet.models.registry import create_model

    model = create_model(phi=-3, num_classes=10)
    with pytest.raises(UsageError, match="names no format"):
        export(model, tmp_path / "model.weird", image_size=32)
    with pytest.raises(UsageError, match="names a torchscript file but --format is onnx"):
        export(model, tmp_path / "model.pt", format="onnx", image_size=32)
    assert not (tmp_path / "model.weird").exists() and not (tmp_path / "model.pt").exists()
    # an explicit --format takes any other suffix
    rc, _, err = run_cli(capsys, "export", "--weights", weights, "--out", out, "--format", "onnx")
    assert rc == 0, err
    assert out.is_file()


# --- the run's lock file ------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["symlink", "hard-link"])
def test_a_lock_that_is_a_link_is_refused_and_its_target_kept(tmp_path, link):
    from effnet.training.rundir import RunDir

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    folder = tmp_path / "run"
    folder.mkdir()
    if link == "symlink":
        (folder / ".lock").symlink_to(victim)
    else:
        os.link(victim, folder / ".lock")
    rundir = RunDir(folder)
    with pytest.raises(UsageError, match=r"\.lock is a .*link"):
        rundir.lock()
    rundir.unlock()
    assert victim.read_text() == "keep me"


def test_train_with_a_symlinked_lock_is_a_usage_error(capsys, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").symlink_to(victim)
    rc, _, err = run_cli(capsys, "train", *TINY_TRAIN, "--out", folder)
    line = error_line(err)
    assert rc == 2 and ".lock" in line, line
    assert victim.read_text() == "keep me"


# --- temporaries: only a run's own, only in a run's folder ----------------------------------------


def test_a_start_in_a_folder_that_is_not_a_run_keeps_its_temporaries(tmp_path):
    from effnet.training.rundir import RunDir

    folder = tmp_path / "mine"
    folder.mkdir()
    theirs = [folder / ".notes.txt.tmp", folder / ".state.pt.abcd1234.tmp"]
    for path in theirs:
        path.write_text("not effnet's")
    rundir = RunDir(folder)
    rundir.lock()
    rundir.unlock()
    assert all(path.is_file() for path in theirs)


def test_a_restart_sweeps_only_the_runs_own_temporaries(tmp_path):
    from effnet.training.rundir import RunDir

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("effnet process 1")  # a start that was killed during its first save
    ours = [folder / ".state.pt.abcd1234.tmp", folder / ".config.json.x_9y8z7w.tmp"]
    theirs = folder / ".notes.txt.tmp"
    for path in [*ours, theirs]:
        path.write_text("half a file")
    rundir = RunDir(folder)
    rundir.lock()
    rundir.unlock()
    assert not any(path.exists() for path in ours)
    assert theirs.is_file()


# --- the disk fills up ----------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_keeps_the_last_good_state(tmp_path):
    # A real process under a file-size limit (RLIMIT_FSIZE; SIGXFSZ ignored, so a write past it
    # fails with EFBIG inside torch.save, which replaces it with an error of its own). The limit
    # lets the first state (~7.6 MB: model and EMA) and the weights (~7.5 MB) through, not the
    # state after an epoch (~22 MB: with the optimizer's moments).
    limit = 12_000_000

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "effnet", "train", *TINY_TRAIN, "--out", str(run)], env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)  # fmt: skip
    line = error_line(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert f"disk full while writing {run / 'state.pt'}" in line, line
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)  # the last good state
    assert state["epoch"] == 0


def test_a_save_that_fills_the_disk_names_the_file(tmp_path):
    # /dev/full fails every write with ENOSPC: the error torch.save raises instead is traced back.
    from effnet.core.fileio import write_failure_is_run_error

    target = tmp_path / "state.pt"
    with pytest.raises(RunError, match=f"disk full while writing {target}"):
        with write_failure_is_run_error(target), open("/dev/full", "wb") as f:
            torch.save({"weights": torch.zeros(100_000)}, f)


# --- a run folder that never reached its first checkpoint ----------------------------------------


def never_checkpointed(run: Path, folder: Path) -> Path:
    """What a start killed before its first resume state leaves when the settings were written
    first: config.json and the lock, no state.pt."""
    folder.mkdir()
    shutil.copy(run / "config.json", folder / "config.json")
    (folder / ".lock").write_text("effnet process 1")
    return folder


@pytest.mark.parametrize("resume", [False, True], ids=["start", "resume"])
def test_a_run_without_its_first_checkpoint_starts(capsys, tmp_path, run, resume):
    folder = never_checkpointed(run, tmp_path / "stuck")
    note = "never reached its first checkpoint .*: starting it from scratch"
    with pytest.warns(EffnetWarning, match=note) if resume else contextlib.nullcontext():
        rc, _, err = run_cli(capsys, "train", *TINY_TRAIN, "--out", folder, *(["--resume"] if resume else []))
    assert rc == 0, err
    assert "Traceback" not in err
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    assert (folder / "best.safetensors").is_file()


def test_predict_out_never_overwrites_an_input_image(capsys, tmp_path):
    """A segmenter's pictures go to <out>/<stem>.png: an --out that is the images' own folder, or
    two inputs of one stem, would overwrite an input or each other; both are refused before any
    file is written."""
    from PIL import Image

    import effnet
    from effnet.tasks import create_segmenter

    weights = effnet.save(create_segmenter(phi=-3, num_classes=2, image_size=32).eval(), tmp_path / "seg.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    png, jpg = photos / "cat.png", photos / "other" / "cat.jpg"
    jpg.parent.mkdir()
    Image.new("RGB", (32, 32), "red").save(png)
    Image.new("RGB", (32, 32), "blue").save(jpg)
    before = png.read_bytes()
    rc, _, err = run_cli(capsys, "predict", png, "--weights", weights, "--out", photos)
    assert rc == 2 and "would overwrite the input image" in error_line(err) and png.read_bytes() == before
    rc, _, err = run_cli(capsys, "predict", png, jpg, "--weights", weights, "--out", tmp_path / "drawn")
    assert rc == 2 and "would both be drawn to" in error_line(err) and not (tmp_path / "drawn").exists()
    rc, _, _ = run_cli(capsys, "predict", png, "--weights", weights, "--out", tmp_path / "drawn")
    assert rc == 0 and (tmp_path / "drawn" / "cat.png").is_file()
