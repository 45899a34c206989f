"""OpenVINO, the second CPU engine: IR export checked against eager with the metadata in rt_info,
``--engine openvino`` wherever ONNX Runtime runs, its options (threads, hints, precision, cache),
bench's rows, and clear errors for broken or foreign files."""

import importlib.util
import json

import numpy as np
import pytest
import torch

import effnet
from effnet.core.errors import MissingExtra, UsageError, WeightsError
from effnet.deploy.export import export
from effnet.deploy.openvino import OpenVinoModel, ir_metadata, read_model
from effnet.deploy.runtime import OnnxModel
from effnet.models.registry import resolve_config
from tests.conftest import give_bn_real_statistics, import_required, run_cli

import_required("openvino", "the deploy extra (pip install -e '.[dev]') installs it")
SIDE = 64


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = effnet.create_model(phi=-3, num_classes=4, resolution=SIDE, class_names=["a", "b", "c", "d"])
    give_bn_real_statistics(model, SIDE, batch=8, damp_residuals=True)
    return model.eval()


@pytest.fixture(scope="module")
def ir(small, tmp_path_factory):
    return export(small, tmp_path_factory.mktemp("ir") / "m.xml", format="openvino", dynamic_batch=True).path


@pytest.mark.slow
def test_ir_keeps_the_metadata_and_matches_eager_on_any_batch(small, ir):
    assert ir.with_suffix(".bin").is_file()
    model = OpenVinoModel(ir)
    assert model.config == small.config and model.class_names == ["a", "b", "c", "d"]
    assert model.preprocessing == small.preprocessing and model.input["batch_size"] is None
    assert ir_metadata(read_model(ir))["format"] == "effnet"
    for batch in (1, 5):
        x = torch.randn(batch, 3, SIDE, SIDE)
        with torch.no_grad():
            expected = small(x)
        assert (model(x) - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_throughput_hint_splits_a_batch_over_streams_with_the_same_answer(ir):
    latency = OpenVinoModel(ir, threads=2, hint="latency")
    throughput = OpenVinoModel(ir, threads=2, hint="throughput")
    assert latency.runner.streams == 1 and throughput.runner.streams >= 1
    x = torch.randn(8, 3, SIDE, SIDE)
    torch.testing.assert_close(throughput(x), latency(x), rtol=1e-5, atol=1e-5)


def test_single_images_run_on_a_static_batch_one_compile_with_the_same_answer(ir):
    # OpenVINO runs a static shape faster; a dynamic-batch file gets a second, batch-1 compile
    model = OpenVinoModel(ir, threads=2)
    assert [d.get_length() for d in model.runner.single.input(0).get_partial_shape()] == [1, 3, SIDE, SIDE]
    assert model.runner.compiled.input(0).get_partial_shape()[0].is_dynamic
    x = torch.randn(3, 3, SIDE, SIDE)
    torch.testing.assert_close(model(x[:1]), model(x)[:1], rtol=1e-5, atol=1e-5)
    assert hasattr(model.runner.local, "single_request") and hasattr(model.runner.local, "request")


def test_one_model_called_from_several_threads_at_once(ir):
    # effnet serve --workers 2 calls the engine from two threads; an OpenVINO infer request runs one
    # inference at a time ("Infer Request is busy"), so each thread needs its own.
    from concurrent.futures import ThreadPoolExecutor

    model = OpenVinoModel(ir, threads=1)
    inputs = [torch.randn(1 + i % 3, 3, SIDE, SIDE) for i in range(24)]
    expected = [model(x) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(model, inputs))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_cache_is_written_and_reused(ir, tmp_path):
    OpenVinoModel(ir, cache_dir=tmp_path / "cache")
    blobs = list((tmp_path / "cache").iterdir())
    assert blobs, "OpenVINO wrote its compiled model to the cache directory"
    OpenVinoModel(ir, cache_dir=tmp_path / "cache")
    assert sorted((tmp_path / "cache").iterdir()) == sorted(blobs)  # a second start reads, adds nothing


@pytest.mark.slow
def test_static_export_runs_a_larger_batch_in_chunks(small, tmp_path):
    path = export(small, tmp_path / "s.xml", format="openvino", batch_size=2).path
    model = OpenVinoModel(path)
    x = torch.randn(5, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = small(x)
    assert model(x).shape == (5, 4) and (model(x) - expected).abs().max() <= 1e-4 * expected.abs().max()
    with pytest.raises(UsageError, match="exported for 64x64 images, got 32x32"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(UsageError, match="expects 3 channels, got 1"):
        model(torch.randn(1, 1, SIDE, SIDE))


@pytest.mark.slow
def test_onnx_and_int8_files_run_on_openvino_too(small, tmp_path):
    path = export(small, tmp_path / "m.onnx", dynamic_batch=True).path
    x = torch.randn(3, 3, SIDE, SIDE)
    torch.testing.assert_close(OpenVinoModel(path)(x), OnnxModel(path)(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_cli_predict_and_eval_on_openvino_agree_with_torch(tmp_path):
    run_cli("train", "--phi", "-3", "--data", "digits", "--image-size", "32", "--epochs", "1", "--limit-train", "256",
            "--out", tmp_path / "run", "--quiet").check()  # fmt: skip
    weights = tmp_path / "run" / "best.safetensors"
    exported = json.loads(run_cli("export", "--weights", weights, "--out", tmp_path / "d.xml", "--dynamic-batch",
                                  "--json").check().stdout)  # fmt: skip
    assert exported["format"] == "openvino" and exported["relative_diff"] <= 1e-4
    on_torch = json.loads(run_cli("eval", "--weights", weights, "--json").check().stdout)
    on_ir = json.loads(run_cli("eval", "--weights", tmp_path / "d.xml", "--json").check().stdout)  # no --data
    on_the_fly = json.loads(run_cli("eval", "--weights", weights, "--engine", "openvino", "--ov-hint", "throughput",
                                    "--threads", "1", "--json").check().stdout)  # fmt: skip
    assert on_ir["top1"] == pytest.approx(on_torch["top1"], abs=0.01) == on_the_fly["top1"]
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(image)
    a = json.loads(run_cli("predict", image, "--weights", weights, "--json").check().stdout)[0]["top"][0]
    b = json.loads(run_cli("predict", image, "--weights", tmp_path / "d.xml", "--json").check().stdout)[0]["top"][0]
    assert a["index"] == b["index"] and a["prob"] == pytest.approx(b["prob"], abs=1e-4)
    proc = run_cli("predict", image, "--weights", tmp_path / "d.xml", "--engine", "onnxruntime")
    assert proc.returncode == 2 and "runs with --engine openvino" in proc.stderr


@pytest.mark.slow
def test_latency_budget_is_measured_on_the_chosen_engine():
    from effnet.search.latency import measure_latency_ms

    config = resolve_config(phi=-3, resolution=32)
    for engine in ("openvino", "onnxruntime"):
        assert measure_latency_ms(config, engine=engine, min_runs=2, min_seconds=0) > 0
    with pytest.raises(UsageError, match="got 'tensorrt'"):
        measure_latency_ms(config, engine="tensorrt")


# --- bad input ------------------------------------------------------------------------------------


def one_line_exit_2(proc, message: str) -> None:
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_bin", "m.xml"),
        ("remove_bin", "m.bin are missing beside it"),
        ("corrupt_xml", "not a readable OpenVINO model"),
    ],
)
def test_broken_ir_files_are_one_line_errors(ir, tmp_path, damage, message):
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(ir.read_bytes())
    bin_.write_bytes(ir.with_suffix(".bin").read_bytes())
    if damage == "truncate_bin":
        bin_.write_bytes(bin_.read_bytes()[:1000])
    elif damage == "remove_bin":
        bin_.unlink()
    else:
        xml.write_text(xml.read_text()[:500])
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(image)
    one_line_exit_2(run_cli("predict", image, "--weights", xml), message)


@pytest.mark.slow
def test_ir_not_made_by_effnet_is_refused(small, tmp_path):
    import openvino as ov

    path = export(small, tmp_path / "m.onnx").path
    ov.save_model(ov.convert_model(str(path)), str(tmp_path / "foreign.xml"))
    with pytest.raises(WeightsError, match="an OpenVINO file without effnet metadata"):
        OpenVinoModel(tmp_path / "foreign.xml")


def test_export_refuses_a_wrong_suffix_and_writes_nothing(tmp_path):
    proc = run_cli("export", "--model", "efficientnet_b0", "--format", "openvino", "--out", tmp_path / "m.onnx")
    one_line_exit_2(proc, "names a onnx file but --format is openvino")
    proc = run_cli("export", "--model", "efficientnet_b0", "--format", "openvino", "--out", tmp_path / "m.ir")
    one_line_exit_2(proc, "an OpenVINO IR is an .xml file")
    assert not list(tmp_path.iterdir())


def test_bad_engine_options_are_usage_errors(ir):
    with pytest.raises(UsageError, match="--ov-hint must be one of latency, throughput"):
        OpenVinoModel(ir, hint="fastest")
    proc = run_cli("bench", "--models", "efficientnet_b0", "--engines", "effnet_openvino", "--ov-hint", "fast")
    assert proc.returncode == 2 and "--ov-hint" in proc.stderr


def test_missing_openvino_names_the_extra(small, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(MissingExtra, match=r"pip install 'effnet\[openvino\]'"):
        export(small, tmp_path / "m.xml", format="openvino")
    assert not list(tmp_path.iterdir())
