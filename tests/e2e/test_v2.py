"""EfficientNetV2 through the whole toolkit, as V1 goes: train, quantize, export to OpenVINO.

The blocks and their parity with torchvision and timm are in test_parity/test_architecture;
here one small V2 (V2-B0 scaled to phi=-3) is trained on real digits and deployed."""

import json

import pytest

from effnet.weights.io import read_metadata
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def v2_weights(tmp_path_factory):
    run = tmp_path_factory.mktemp("v2") / "run"
    run_cli(
        "train", "--model", "efficientnetv2_b0", "--phi", "-3", "--data", "digits", "--image-size", "32", "--epochs",
        "3", "--batch-size", "32", "--limit-train", "640", "--ema-decay", "0", "--bn-momentum", "0.1", "--out", run,
        "--quiet",
    ).check()  # fmt: skip
    return run / "best.safetensors"


def test_v2_trains_and_runs_int8_and_on_openvino(tmp_path, v2_weights):
    config = json.loads(read_metadata(v2_weights)["config"])
    assert (config["name"], config["family"]) == ("efficientnetv2_b0_phi-3", "efficientnetv2")
    fp32 = json.loads(run_cli("eval", "--weights", v2_weights, "--json").check().stdout)
    assert fp32["top1"] > 0.8  # 60 steps on 640 digits: ~0.94 measured, chance is 0.1

    int8 = tmp_path / "int8.onnx"
    report = json.loads(run_cli("quantize", "--weights", v2_weights, "--calibration-images", "64", "--out", int8,
                                "--json").check().stdout)  # fmt: skip
    assert report["int8_bytes"] < 0.4 * report["fp32_bytes"]
    assert abs(report["int8_score"] - report["fp32_score"]) <= 0.03

    ir = tmp_path / "m.xml"
    run_cli("export", "--weights", v2_weights, "--out", ir).check()
    on_openvino = json.loads(run_cli("eval", "--weights", ir, "--json").check().stdout)
    assert on_openvino["top1"] == pytest.approx(fp32["top1"], abs=0.002)
