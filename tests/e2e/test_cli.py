"""The command line: its exit codes and output (in-process through effnet.cli.main, the code a
user's command runs), and the real command's start-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import skimage
import torch

import effnet
from effnet.core import extras
from effnet.models.flops import count_params
from tests.conftest import run_cli

PHOTOS = Path(skimage.data.__file__).parent
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "lynx"}


def run(*args, check_rc=0):
    proc = run_cli(*args)
    assert proc.returncode == check_rc, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_models_json_lists_the_family():
    rows = json.loads(run("models", "--json").stdout)
    assert [r["name"] for r in rows] == effnet.list_models()
    b0 = rows[0]
    assert (b0["params"], b0["resolution"], b0["dropout"]) == (5_288_548, 224, 0.2)
    assert b0["macs"] == pytest.approx(0.39e9, rel=0.02)


def test_models_table_has_every_model_it_lists():
    # every member is in the JSON test above (one 11 s pass over them all); the table of a few
    out = run("models", "--filter", "efficientnet_b[01]").stdout
    assert all(name in out for name in ("efficientnet_b0", "efficientnet_b1"))
    assert "efficientnet_b2" not in out and "5,288,548" in out


def test_models_filter():
    rows = json.loads(run("models", "--filter", "*lite*", "--json").stdout)
    assert [r["name"] for r in rows] == [f"efficientnet_lite{i}" for i in range(5)]
    assert "matches no model" in run("models", "--filter", "resnet*", check_rc=2).stderr


def test_scale_json_reports_the_derived_model():
    row = json.loads(run("scale", "--phi", "2", "--alpha", "1.1", "--beta", "1.2", "--gamma", "1.05", "--json").stdout)
    assert row["depth"] == pytest.approx(1.21) and row["width"] == pytest.approx(1.44)
    assert row["resolution"] == round(224 * 1.05**2)
    assert row["params"] == count_params(effnet.create_model(phi=2, alpha=1.1, beta=1.2, gamma=1.05).config)
    assert row["macs_vs_base"] > 1


@pytest.mark.parametrize("phi", ["nan", "inf", "1e9", "-40"])
def test_scale_rejects_bad_phi(phi):
    proc = run("scale", f"--phi={phi}", check_rc=2)
    assert "phi" in proc.stderr


def test_unknown_model_suggests_names(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, path)
    proc = run("predict", PHOTOS / "coffee.png", "--weights", path, "--model", "efficientnet-b0", check_rc=2)
    assert "did you mean efficientnet_b0" in proc.stderr


def test_predict_pretrained_lite0_on_real_photos():
    out = run(
        "predict",
        PHOTOS / "chelsea.png",
        PHOTOS / "coffee.png",
        "--model",
        "efficientnet_lite0",
        "--weights",
        "lite0",
        "--top-k",
        "3",
        "--json",
    ).stdout
    chelsea, coffee = json.loads(out)
    assert chelsea["image"].endswith("chelsea.png") and len(chelsea["top"]) == 3
    assert chelsea["top"][0]["label"] in CAT_CLASSES
    assert coffee["top"][0]["label"] in {"espresso", "cup", "coffee mug"}
    assert set(coffee["top"][0]) == {"label", "index", "prob"}
    assert coffee["top"][0]["prob"] > 0.5


def test_predict_names_undecodable_image_and_classifies_the_rest(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((PHOTOS / "rocket.jpg").read_bytes()[:2000])
    proc = run("predict", broken, PHOTOS / "coffee.png", "--weights", "lite0", "--json", check_rc=2)
    assert "broken.jpg" in proc.stderr and "cannot decode" in proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["image"].endswith("coffee.png")


def test_predict_with_a_saved_effnet_file(tmp_path):
    model = effnet.create_model("efficientnet_b0", num_classes=2, width=0.25, depth=0.25, class_names=["a", "b"])
    effnet.save(model, tmp_path / "tiny.safetensors")
    out = json.loads(run("predict", PHOTOS / "coffee.png", "--weights", tmp_path / "tiny.safetensors", "--json").stdout)
    assert {t["label"] for t in out[0]["top"]} == {"a", "b"}


def test_predict_mismatched_checkpoint_names_keys(tmp_path):
    path = tmp_path / "b0.pth"
    torch.save(effnet.create_model("efficientnet_b0").state_dict(), path)
    proc = run("predict", PHOTOS / "coffee.png", "--weights", path, "--model", "efficientnet_b2", check_rc=2)
    assert "does not match efficientnet_b2" in proc.stderr
    assert "missing: stages.0.1.dw_conv.weight" in proc.stderr and "shape mismatch: stages.2.0" in proc.stderr


@pytest.mark.parametrize(
    ("saved", "into", "message"),
    [
        (
            "efficientnetv2_b0",
            "efficientnet_b0",
            "EfficientNetV2 weights (Fused-MBConv blocks): load them with an efficientnetv2_",
        ),
        ("efficientnet_b0", "efficientnetv2_b0", "EfficientNet (V1) weights: load them with an efficientnet_* model"),
    ],
)
def test_predict_says_when_v1_and_v2_weights_are_swapped(tmp_path, saved, into, message):
    path = tmp_path / "sd.pth"
    torch.save(effnet.create_model(saved, num_classes=3).state_dict(), path)
    proc = run("predict", PHOTOS / "coffee.png", "--weights", path, "--model", into, check_rc=2)
    assert f"does not match {into}" in proc.stderr and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_weights_and_bad_arguments():
    assert "neither a file nor a pretrained tag" in run("predict", "x.png", "--weights", "nope", check_rc=2).stderr
    assert "invalid choice" in run("predict", "x.png", "--weights", "lite0", "--padding", "x", check_rc=2).stderr
    assert "--top-k" in run("predict", PHOTOS / "coffee.png", "--weights", "lite0", "--top-k", "0", check_rc=2).stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "effnet"
    assert script.exists() and os.access(script, os.X_OK)


def test_help_answers_without_importing_torch():
    """effnet --help parses before anything heavy loads: torch alone takes seconds to import."""
    code = (
        "import sys, contextlib, io\n"
        "from effnet.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'train' in out.getvalue()\n"
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'onnx', 'optuna') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    real = subprocess.run([sys.executable, "-m", "effnet", "train", "--help"], capture_output=True, text=True)
    assert real.returncode == 0 and "--recipe" in real.stdout


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(extras.EXTRAS, "search", ("effnet_test_module_that_is_not_installed",))
    proc = run("search", "--data", "digits", "--storage", f"sqlite:///{tmp_path / 's.db'}", check_rc=2)
    assert proc.stderr.strip() == (
        "effnet: error: this needs effnet_test_module_that_is_not_installed, which is not installed: "
        "pip install 'effnet[search]'"
    )
    assert not (tmp_path / "s.db").exists()
