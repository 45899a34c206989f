"""Export to ONNX / TorchScript and serving on ONNX Runtime: parity with eager, metadata that
travels with the file, and clear errors for files and inputs that do not fit."""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import effnet
from effnet.deploy.choices import BENCH_ENGINES
from effnet.deploy.export import ExportError, export
from effnet.deploy.runtime import OnnxModel
from effnet.models.flops import count_macs
from effnet.models.registry import resolve_config
from tests.conftest import give_bn_real_statistics, optional_skipif, run_cli

SIDE = 64  # small images keep the big members affordable; the graph is the same at any size
# B0, Lite0, Lite4 and V2-B0 hold every operator and padding mode of the family (SE and SiLU,
# ReLU6 without SE, Fused-MBConv; Lite4's odd rounded widths). B1-B4 and Lite1-3 are the same
# blocks in tables between those (5-15 s each here): EFFNET_HUGE_TESTS=1 exports them too (B3,
# the other odd-width table, left the default set when the mobile formats' tests joined the
# suite). B5-B7 and the larger V2s are longer tables still; B8 and L2 exceed ONNX's 2 GB
# single-file limit.
SKIPPED = ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_b8", "efficientnet_l2")
ALWAYS = ("efficientnet_b0", "efficientnet_lite0", "efficientnet_lite4", "efficientnetv2_b0")
RUN_HUGE = os.environ.get("EFFNET_HUGE_TESTS") == "1"
EXPORTED = [
    n if n in ALWAYS else pytest.param(n, marks=optional_skipif(not RUN_HUGE, "EFFNET_HUGE_TESTS=1 exports it too"))
    for n in effnet.list_models()
    if n not in SKIPPED and (not n.startswith("efficientnetv2") or n == "efficientnetv2_b0")
]


def trained_like(name: str, **kwargs) -> torch.nn.Module:
    model = effnet.create_model(name, **kwargs)
    give_bn_real_statistics(model, SIDE, batch=8, damp_residuals=True)
    return model


def assert_matches_eager(model, run, batch: int = 2) -> None:
    x = torch.randn(batch, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = model(x)
    scale = expected.abs().max().item()
    assert scale > 0.5, "outputs of order 1, or the comparison proves nothing"
    assert (run(x) - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_matches_eager_for_every_member(name, tmp_path):
    # export() itself ran the written file on ONNX Runtime against eager, on a batch size other
    # than the one traced; the other tests load exports again independently.
    model = trained_like(name)
    result = export(model, tmp_path / "m.onnx", image_size=SIDE, dynamic_batch=True)
    assert result.relative_diff <= 1e-4 and result.output_scale > 0.5
    # Reloaded independently: a new ONNX Runtime session opened from the written file's path (not
    # effnet's loader, not export's own check), on a batch of 3, against the eager model.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    scale = float(np.abs(expected).max())
    assert scale > 0.5 and got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-4 * scale


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0"])
def test_same_padding_exports(name, tmp_path):
    # TF-ported weights: asymmetric SAME padding becomes constant pads at a fixed size,
    # including a size that is not a multiple of the stride. Every member has the same kernel
    # sizes and strides (one stage table), so B0 (with SE) and Lite0 (without) cover the pads.
    model = trained_like(name, padding="same")
    result = export(model, tmp_path / "m.onnx", image_size=SIDE, dynamic_batch=True)
    assert_matches_eager(model, OnnxModel(result.path))
    odd = export(model, tmp_path / "odd.onnx", image_size=SIDE + 3)
    assert odd.relative_diff <= 1e-4 and odd.batch_size == 1


@pytest.mark.slow
def test_exported_graph_is_the_inference_form(tmp_path):
    model = trained_like("efficientnet_b0")
    proto = onnx.load(str(export(model, tmp_path / "m.onnx", image_size=SIDE).path))
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops, "BN is folded into the convolutions"
    # The SE squeeze and the head pool as GlobalAveragePool, which ONNX Runtime keeps in its NCHWc layout.
    assert ops == {"Conv", "Sigmoid", "Mul", "Add", "GlobalAveragePool", "Reshape", "Gemm"}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == "efficientnet_b0"
    assert json.loads(meta["preprocessing"])["resolution"] == SIDE
    assert json.loads(meta["input"]) == {"name": "image", "channels": 3, "image_size": SIDE, "batch_size": 1}
    # No exporter provenance: it would ship this machine's file paths and stack traces.
    assert not any(n.metadata_props for n in proto.graph.node)
    assert str(Path(__file__).parents[3]) not in proto.SerializeToString().decode("latin-1")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_carries_metadata(tmp_path):
    model = trained_like("efficientnet_lite0")
    model.class_names = [f"class {i}" for i in range(1000)]
    result = export(model, tmp_path / "m.pt", format="torchscript", image_size=SIDE)
    files = {"effnet.json": ""}
    module = torch.jit.load(str(result.path), _extra_files=files)
    meta = json.loads(files["effnet.json"])
    assert json.loads(meta["class_names"])[:2] == ["class 0", "class 1"]
    assert_matches_eager(model, lambda x: module(x))


@pytest.mark.slow
def test_failed_check_leaves_no_file(tmp_path, monkeypatch):
    model = trained_like("efficientnet_b0")
    # A graph that computes something else: the eager reference is perturbed after export.
    import effnet.deploy.export as ex

    real = ex.run_exported
    monkeypatch.setattr(ex, "run_exported", lambda *a: real(*a) + 1.0)
    with pytest.raises(ExportError, match="differs from the eager model"):
        export(model, tmp_path / "m.onnx", image_size=SIDE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_static_and_dynamic_batch(tmp_path):
    model = trained_like("efficientnet_b0", width=0.5, depth=0.5)
    static = OnnxModel(export(model, tmp_path / "s.onnx", image_size=SIDE, batch_size=2).path)
    assert static(torch.randn(2, 3, SIDE, SIDE)).shape == (2, 1000)
    dynamic = OnnxModel(export(model, tmp_path / "d.onnx", image_size=SIDE, dynamic_batch=True).path)
    for n in (1, 7):
        assert dynamic(torch.randn(n, 3, SIDE, SIDE)).shape == (n, 1000)
    # Any batch runs on the static export, in chunks of its own size (the last one padded), and
    # gives what the dynamic export gives image by image.
    x = torch.randn(5, 3, SIDE, SIDE)
    torch.testing.assert_close(static(x), dynamic(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(effnet.UsageError, match="expects 3 channels, got 1"):
        dynamic(torch.randn(1, 1, SIDE, SIDE))
    with pytest.raises(effnet.UsageError, match=f"exported for {SIDE}x{SIDE} images, got 32x32"):
        dynamic(torch.randn(1, 3, 32, 32))


@pytest.mark.slow
def test_corrupt_and_foreign_onnx_files(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    with pytest.raises(effnet.WeightsError, match="corrupt.onnx: not a valid ONNX model"):
        OnnxModel(corrupt)
    truncated = tmp_path / "truncated.onnx"
    good = export(trained_like("efficientnet_lite0"), tmp_path / "good.onnx", image_size=SIDE).path
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(effnet.WeightsError, match="truncated.onnx: not a valid ONNX model"):
        OnnxModel(truncated)
    foreign = tmp_path / "foreign.onnx"
    conv = torch.nn.Conv2d(3, 4, 3).eval()
    torch.onnx.export(conv, (torch.randn(1, 3, 8, 8),), str(foreign), dynamo=True, verbose=False)
    with pytest.raises(effnet.WeightsError, match="without effnet metadata"):
        OnnxModel(foreign)


def cli(*args, rc=0):
    proc = run_cli(*args)
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@pytest.mark.slow
def test_cli_export_predict_with_both_engines(tmp_path):
    import skimage

    chelsea = Path(skimage.data.__file__).parent / "chelsea.png"
    out = tmp_path / "lite0.onnx"
    report = json.loads(cli("export", "--weights", "lite0", "--out", out, "--dynamic-batch", "--json").stdout)
    assert report["relative_diff"] <= 1e-4 and report["output_scale"] > 1.0 and out.is_file()
    by_engine = {}
    for args in (["--weights", "lite0"], ["--weights", out], ["--weights", "lite0", "--engine", "onnxruntime"]):
        top = json.loads(cli("predict", chelsea, *args, "--top-k", "3", "--json").stdout)[0]["top"]
        by_engine[str(args)] = top
        assert top[0]["label"] in {"tiger cat", "tabby", "Egyptian cat"}
    torch_probs, *onnx_probs = ([t["prob"] for t in top] for top in by_engine.values())
    for probs in onnx_probs:
        assert probs == pytest.approx(torch_probs, abs=1e-4)


def test_cli_export_bad_input(tmp_path):
    assert "give --weights" in cli("export", "--out", tmp_path / "x.onnx", rc=2).stderr
    err = cli("export", "--model", "efficientnet_b9", "--out", tmp_path / "x.onnx", rc=2).stderr
    assert "efficientnet_b9" in err
    assert "is a directory" in cli("export", "--model", "efficientnet_b0", "--out", tmp_path, rc=2).stderr
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"not onnx")
    err = cli("predict", __file__, "--weights", corrupt, rc=2).stderr
    assert "bad.onnx: not a valid ONNX model" in err
    err = cli("predict", __file__, "--weights", corrupt, "--engine", "torch", rc=2).stderr
    assert "runs with --engine onnxruntime" in err
    assert list(tmp_path.iterdir()) == [corrupt]


# the mobile runtimes' rows: tests/unit/deploy/test_mobile.py (their exports cost ~10 s a batch size)
DESKTOP = [e for e in BENCH_ENGINES if not e.endswith(("_litert", "_executorch"))]


@pytest.mark.slow
def test_cli_bench_reports_every_engine(tmp_path):
    plot, layers = tmp_path / "bench.png", tmp_path / "layers.png"
    rows = json.loads(
        cli(
            "bench", "--image-size", "32", "--batch-sizes", "1,2", "--threads", "1", "--runs", "2",
            "--min-seconds", "0", "--peak-gflops", "100", "--plot", plot, "--json", "--engines", ",".join(DESKTOP),
            "--roofline-plot", layers,
        ).stdout
    )  # fmt: skip
    engines = {r["engine"] for r in rows}
    assert engines == {"torchvision", "timm", "effnet", "effnet_onnxruntime", "torchvision_onnxruntime",
                       "effnet_openvino", "torchvision_openvino"}  # fmt: skip
    # vs_limit: latency over 2 x MACs x batch at the stated 100 GFLOP/s
    macs = count_macs(resolve_config("efficientnet_b0"), 32)
    for r in rows:
        assert r["vs_limit"] == pytest.approx(r["median_ms"] / (2 * macs * r["batch"] / 100e9 * 1e3), rel=1e-3)
        # the roofline limit counts memory traffic too: never below the arithmetic one
        assert r["vs_roofline"] < r["vs_limit"], r
    assert {r["batch"] for r in rows} == {1, 2} and all(r["threads"] == 1 for r in rows)
    assert all(r["precision"] == "fp32" and r["peak_gflops"] == 100 for r in rows)  # OpenVINO in f32: fp32's peak
    baseline = [r for r in rows if r["engine"] == "torchvision"]
    assert all(r["vs_torchvision"] == 1.0 for r in baseline)
    # No row beats 2 x MACs at this machine's measured fp32 peak (313 GFLOP/s on both cores; one
    # thread here), and throughput is the batch over the median.
    for r in rows:
        assert r["median_ms"] >= 2 * macs * r["batch"] / 313e9 * 1e3, r
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3), rel=1e-6)
    assert plot.read_bytes()[:8] == layers.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--batch-sizes takes comma-separated integers" in cli("bench", "--batch-sizes", "1,x", rc=2).stderr


@pytest.mark.slow
def test_opset_17_and_an_opset_too_old(tmp_path):
    model = trained_like("efficientnet_b0", width=0.5, depth=0.5)
    result = export(model, tmp_path / "o17.onnx", image_size=SIDE, opset=17)
    proto = onnx.load(str(result.path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert_matches_eager(model, OnnxModel(result.path), batch=1)
    with pytest.raises(effnet.UsageError, match="--opset 9: the graph cannot be expressed at that opset"):
        export(model, tmp_path / "o9.onnx", image_size=SIDE, opset=9)
    assert not (tmp_path / "o9.onnx").exists()
