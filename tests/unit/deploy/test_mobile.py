"""LiteRT (.tflite) and ExecuTorch (.pte): exports equal to eager, read back by the runtimes
themselves (not effnet's loader), metadata that travels in the file, int8 by PT2E that keeps
accuracy, and the bad input a user can give them."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.core.errors import MissingExtra, UsageError, WeightsError
from effnet.deploy.export import check_batch, export
from tests.conftest import made_once, require_component, run_cli

# found, not imported: importing the converters costs every worker ~2 s at collection
for _module, _extra in (("ai_edge_litert", "litert"), ("litert_torch", "litert"), ("executorch", "executorch")):
    require_component(_module, importlib.util.find_spec(_module) is not None, f"pip install 'effnet[{_extra}]'")

SIDE = 64
SUFFIX = {"litert": ".tflite", "executorch": ".pte"}


def raw_runtime(path, x: np.ndarray) -> np.ndarray:
    """The file run by its runtime's own Python API, without effnet."""
    if str(path).endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return method.execute([torch.from_numpy(x)])[0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("format", ["litert", "executorch"])
def test_export_equals_eager_in_the_runtime_itself_and_carries_metadata(small_digits_weights, format, tmp_path):
    # a trained B0-family network (SE, SiLU, depthwise convs and their padding: what a converter
    # has to get right) small enough to convert in seconds; benchmarks/mobile/parity.json converts
    # every member at full size
    model = effnet.open(small_digits_weights)
    side = model.preprocessing.resolution
    path = tmp_path / f"digits{SUFFIX[format]}"
    result = export(model, path)
    assert result.format == format and result.batch_size == 1 and result.image_size == side
    assert result.relative_diff <= 1e-5 and result.output_scale > 0.5  # the parity bound
    x = check_batch(model, 4, 3, side)  # digit-like blocks, normalised as the model expects
    with torch.no_grad():
        expected = model(x)
    got = raw_runtime(path, x[:1].numpy())
    assert np.abs(got - expected[:1].numpy()).max() <= 1e-5 * expected.abs().max().item()
    opened = effnet.open(path)
    assert opened.engine == format and opened.config.name == model.config.name
    assert opened.class_names == model.class_names and opened.preprocessing == model.preprocessing
    # a batch-1 graph runs larger batches image by image
    assert (opened(x) - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    with pytest.raises(UsageError, match=f"exported for {side}x{side} images, got 48x48"):
        opened(torch.randn(1, 3, 48, 48))


@pytest.mark.slow
def test_int8_keeps_accuracy_at_a_third_of_the_size(small_digits_weights, tmp_path):
    # the command end to end on LiteRT; ExecuTorch's and the dynamic-range int8 through the API below
    format, method, weights = "litert", "ptq", small_digits_weights
    out = tmp_path / f"int8{SUFFIX[format]}"
    proc = run_cli("quantize", "--weights", weights, "--calibration-images", "64", "--out", out, "--json")
    report = json.loads(proc.check().stdout)
    assert report["format"] == format and report["scheme"] == method and report["calibration_images"] == 64
    # the fp32 export (checked against eager when written) scores what torch scores, image for image
    on_torch = json.loads(run_cli("eval", "--weights", weights, "--json").check().stdout)
    assert on_torch["engine"] == "torch" and report["fp32_score"] == on_torch["top1"] > 0.85
    # this tiny model carries fixed overheads (metadata, scales, the converter's tables): 0.29-0.37x
    # measured; the real Lite0: 0.28x (benchmarks/mobile)
    assert report["int8_bytes"] == out.stat().st_size < 0.4 * report["fp32_bytes"]
    assert report["score_drop"] <= 0.03, report
    evaluated = json.loads(run_cli("eval", "--weights", out, "--json").check().stdout)
    assert evaluated["engine"] == format and evaluated["n"] == 359
    assert evaluated["top1"] == pytest.approx(report["int8_score"])
    photo = tmp_path / "digit.png"
    from effnet.datasets.builtin import digits

    Image.fromarray(digits()[0]["test"].images[0]).save(photo)
    predicted = json.loads(run_cli("predict", photo, "--weights", out, "--json").check().stdout)
    assert predicted[0]["engine"] == format and len(predicted[0]["top"]) == 5
    from ai_edge_litert.interpreter import Interpreter  # int8 in and out: effnet quantizes the float input

    assert Interpreter(model_path=str(out)).get_input_details()[0]["dtype"] == np.int8


@pytest.mark.slow
@pytest.mark.parametrize("format, dynamic", [("executorch", False), ("litert", True)])
def test_int8_of_executorch_and_dynamic_range_keep_accuracy(small_digits_weights, format, dynamic, tmp_path):
    from effnet.compress.calibration import calibration_batches
    from effnet.compress.pt2e import write_int8
    from effnet.weights.trained import load_trained

    trained = load_trained(small_digits_weights)
    options = trained.provenance.data_options(None, origin="weights")
    batches = [] if dynamic else calibration_batches(trained.model, options, 64, training=trained.provenance.training)
    out = tmp_path / f"int8{SUFFIX[format]}"
    provenance = {"training": json.dumps(trained.provenance.training)}  # so eval finds the data
    write_int8(trained.model, out, format, batches, dynamic=dynamic, extra_metadata=provenance)
    fp32_bytes = 4 * sum(p.numel() for p in trained.model.parameters())
    assert out.stat().st_size < 0.4 * fp32_bytes
    on_torch = effnet.evaluate(small_digits_weights)["top1"]
    evaluated = json.loads(run_cli("eval", "--weights", out, "--json").check().stdout)
    assert evaluated["engine"] == format and evaluated["n"] == 359
    assert on_torch - evaluated["top1"] <= 0.03 and on_torch > 0.85, (on_torch, evaluated["top1"])


@pytest.mark.parametrize("format", ["litert", "executorch"])
def test_int8_relu6_is_quantized_after_its_clamp_not_before(format):
    # The quantizers fuse conv+ReLU but give ReLU6 the convolution's own scale, set by the
    # unclamped output: the real Lite0 then kept its top-1 on 5 of 16 photos (15 of 16 fused).
    from effnet.compress.pt2e import quantized_graph

    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_lite0", width=0.25, depth=0.1, num_classes=10).eval()
    images = check_batch(model, 4, 3, 32) * 3  # inputs wide enough that some convolutions pass 6
    graph, _, _ = quantized_graph(model, format, [images.numpy()], image_size=32)
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    clamps = [n for n in graph.graph.nodes if n.target == torch.ops.aten.hardtanh_.default]
    assert len(clamps) == 15  # stem, head, and one expand and depthwise per stage (the first has no expand)
    for clamp in clamps:
        source = clamp.args[0]
        assert source.target == torch.ops.aten.conv2d.default, f"{clamp} reads {source} (a quantize between)"
        (after,) = clamp.users
        assert after.target == quantize and after.args[1] <= 6 / 255 * 1.001  # 0..6 over 255 steps at most


def _write_peer(folder) -> None:
    from effnet.deploy.export import inference_form
    from effnet.deploy.litert import convert

    model = effnet.create_model("efficientnet_b0", width=0.25, depth=0.1)  # tiny: converts in ~2 s
    (folder / "peer.tflite").write_bytes(convert(inference_form(model), torch.randn(1, 3, SIDE, SIDE)))


@pytest.fixture(scope="session")
def peer_tflite(tmp_path_factory):
    """A .tflite with no effnet metadata, as another converter would write it: B0's table (tiny)
    with 1000 classes; made once for the session (made_once)."""
    return made_once(tmp_path_factory, "peer-tflite", _write_peer) / "peer.tflite"


@pytest.mark.slow
def test_file_without_metadata_asks_for_the_model_and_then_runs(peer_tflite, tmp_path):
    photo = tmp_path / "coffee.png"
    from skimage import data

    Image.fromarray(data.coffee()).save(photo)
    proc = run_cli("predict", photo, "--weights", peer_tflite)
    assert proc.returncode == 2 and "without effnet metadata" in proc.stderr and "--model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("predict", photo, "--weights", peer_tflite, "--model", "efficientnet_b0", "--json").check()
    top = json.loads(proc.stdout)[0]["top"]
    assert len(top) == 5 and top[0]["label"] in effnet.weights.pretrained.imagenet_classes()
    opened = effnet.open(peer_tflite, model="efficientnet_b0")
    assert opened.preprocessing.resolution == SIDE  # the graph's own input size


@pytest.mark.parametrize("suffix", [".tflite", ".pte"])
def test_damaged_files_are_one_line_errors(tmp_path, suffix, peer_tflite):
    truncated = tmp_path / f"cut{suffix}"
    if suffix == ".tflite":
        truncated.write_bytes(peer_tflite.read_bytes()[:100_000])
    else:
        truncated.write_bytes(b"\0\0\0\0ET12" + b"\1" * 5000)
    other = tmp_path / f"other{suffix}"
    other.write_bytes(b"PK\3\4 a zip, not a model" * 10)
    photo = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(photo)
    for bad in (truncated, other, tmp_path / f"missing{suffix}"):
        proc = run_cli("predict", photo, "--weights", bad)
        assert proc.returncode == 2, proc.stderr
        assert str(bad) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    with pytest.raises(WeightsError):
        effnet.open(truncated)


def test_wrong_engine_for_the_suffix_and_unknown_formats(tmp_path, peer_tflite):
    proc = run_cli("eval", "--weights", peer_tflite, "--engine", "onnxruntime")
    assert proc.returncode == 2 and "runs with --engine litert" in proc.stderr
    proc = run_cli("export", "--model", "efficientnet_b0", "--out", tmp_path / "m.pte", "--dynamic-batch")
    assert proc.returncode == 2 and "fixed batch" in proc.stderr and not list(tmp_path.iterdir())
    proc = run_cli("predict", peer_tflite, "--weights", peer_tflite, "--engine", "executorch")
    assert proc.returncode == 2 and "runs with --engine litert" in proc.stderr


def test_quantize_refuses_an_empty_calibration_folder_and_onnx_only_options(tmp_path, small_digits_weights):
    digits_weights = small_digits_weights
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "int8.tflite"
    proc = run_cli("quantize", "--weights", digits_weights, "--data", empty, "--out", out)
    assert proc.returncode == 2 and str(empty) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("quantize", "--weights", digits_weights, "--keep-fp32", "Sigmoid", "--out", out)
    assert proc.returncode == 2 and "ONNX Runtime's" in proc.stderr
    proc = run_cli("quantize", "--weights", digits_weights, "--method", "dynamic", "--out", tmp_path / "m.pte")
    assert proc.returncode == 2 and "LiteRT's" in proc.stderr
    assert not out.exists() and not (tmp_path / "m.pte").exists()


@pytest.mark.parametrize("format, module", [("litert", "litert_torch"), ("executorch", "executorch")])
def test_missing_runtime_names_its_extra(tmp_path, monkeypatch, format, module):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(MissingExtra, match=rf"pip install 'effnet\[{format}\]'"):
        export(effnet.create_model("efficientnet_b0"), tmp_path / f"m{SUFFIX[format]}", image_size=SIDE)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_times_the_mobile_runtimes_in_the_same_rotation():
    engines = "effnet,effnet_litert"  # ExecuTorch's rows take the same path (bench._mobile_runner)
    rows = json.loads(run_cli(
        "bench", "--models", "efficientnet_lite0", "--image-size", "32", "--batch-sizes", "1", "--threads", "1",
        "--runs", "3", "--min-seconds", "0", "--peak-gflops", "100", "--engines", engines, "--json",
    ).check().stdout)  # fmt: skip
    assert [r["engine"] for r in rows] == ["effnet", "effnet_litert"]
    assert all(r["runs"] >= 3 and r["batch"] == 1 and r["median_ms"] > 0.05 for r in rows)
