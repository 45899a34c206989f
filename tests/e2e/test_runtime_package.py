"""The torch-free runtime (runtime/, the effnet-runtime package) in a venv of its own without
torch (make test builds .venv-runtime): it predicts, evaluates and serves effnet's exports with
the answers effnet gives for them, and refuses bad files in one line."""

import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from effnet.weights.trained import load_trained
from tests.conftest import free_port, require_component, run_cli

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-runtime"
RUNTIME = VENV / "bin" / "effnet-runtime"


@pytest.fixture(scope="module")
def runtime():
    require_component("the torch-free runtime venv", RUNTIME.exists(), "make .venv-runtime/.installed builds it")
    no_torch = subprocess.run([VENV / "bin" / "python", "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0, "the runtime venv must not hold torch"
    return RUNTIME


def export_digits(weights, out: Path) -> tuple[dict, Path, list[Path]]:
    """The digits model as .tflite (fp32 and PT2E int8) and .onnx, and 60 test digits as PNG in
    class folders named by the model's classes."""
    files = {"tflite": out / "d.tflite", "onnx": out / "d.onnx", "int8": out / "d_int8.tflite"}
    run_cli("export", "--weights", weights, "--out", files["tflite"]).check()
    run_cli("export", "--weights", weights, "--out", files["onnx"]).check()
    # the int8 file as quantize writes it, through the API (the command is tested in test_mobile.py)
    from effnet.compress.calibration import calibration_batches
    from effnet.compress.pt2e import write_int8
    from effnet.datasets.builtin import digits

    trained = load_trained(weights)
    options = trained.provenance.data_options(None, origin=str(weights))
    batches = calibration_batches(trained.model, options, 32, training=trained.provenance.training)
    write_int8(trained.model, files["int8"], "litert", batches)

    test = digits()[0]["test"]
    names = json.loads(run_cli("eval", "--weights", weights, "--json").check().stdout)["classes"]
    images = []
    for i in range(60):
        folder = out / "data" / names[test.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i]).save(folder / f"{i}.png")
        images.append(folder / f"{i}.png")
    return files, out / "data", images


def run(*args, check_rc=0):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.mark.slow
def test_runtime_predicts_evaluates_and_serves_as_effnet_does(runtime, small_digits_weights, tmp_path):
    # one test, so the exports are made once whichever worker runs it
    files, data, images = export_digits(small_digits_weights, tmp_path)
    for kind, path in files.items():
        ours = json.loads(run_cli("predict", *images, "--weights", path, "--top-k", "3", "--json").check().stdout)
        theirs = json.loads(run(runtime, "predict", *images, "--weights", path, "--top-k", "3", "--json").stdout)
        assert [r["engine"] for r in theirs] == [{"onnx": "onnxruntime"}.get(kind, "litert")] * 60
        # Pillow's resize and torchvision's differ in rounding only: the same classes, probabilities
        # within 2 points (fp32; 0.4 measured). The int8 graph quantizes its input in steps of about
        # one grey level, so a level's difference moves its answer more (6.7 points measured).
        pairs = list(zip(ours, theirs, strict=True))
        assert sum(a["top"][0]["index"] == b["top"][0]["index"] for a, b in pairs) >= 58, kind
        worst = max(abs(a["top"][0]["prob"] - b["top"][0]["prob"]) for a, b in pairs)
        assert worst <= (0.15 if kind == "int8" else 0.02), kind
        evaluated = json.loads(run(runtime, "eval", "--data", data, "--weights", path, "--json").stdout)
        right = sum(r["top"][0]["label"] == Path(p).parent.name for r, p in zip(ours, images, strict=True))
        assert evaluated["n"] == 60 and abs(evaluated["top1"] - right / 60) <= 1 / 60 and evaluated["top1"] > 0.8
    serve_and_check(runtime, files["int8"], images[0])


def serve_and_check(runtime, weights: Path, image: Path) -> None:
    port = free_port()
    server = subprocess.Popen([runtime, "serve", "--weights", weights, "--port", str(port), "--max-body-mb", "1"],
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                health = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=2).read())
                break
            except OSError:
                time.sleep(0.1)
        assert health["status"] == "ready"
        request = urllib.request.Request(f"{base}/v1/predict?top_k=2", data=image.read_bytes())
        answer = json.loads(urllib.request.urlopen(request).read())
        local = json.loads(run(runtime, "predict", image, "--weights", weights, "--top-k", "2", "--json").stdout)
        assert answer["top"] == local[0]["top"]
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(f"{base}/v1/predict", data=b"not an image"))
        assert caught.value.code == 400 and "cannot decode" in json.loads(caught.value.read())["error"]
        # a body over --max-body-mb is refused from its Content-Length, before it is sent
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/v1/predict")
        connection.putheader("Content-Length", "2000000")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["kind"] == "too_large"
        connection.close()
        model = json.loads(urllib.request.urlopen(f"{base}/v1/model").read())
        assert model["engine"] == "litert" and len(model["classes"]) == 10
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_runtime_refuses_bad_files_in_one_line(runtime, tmp_path):
    photo = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(photo)
    (tmp_path / "cut.tflite").write_bytes(b"\0\0\0\0TFL3" + b"\1" * 100)
    (tmp_path / "bare.onnx").write_bytes(b"not protobuf")
    cases = [(tmp_path / "cut.tflite", "LiteRT"), (tmp_path / "bare.onnx", "ONNX Runtime"),
             (tmp_path / "none.tflite", "no such file"), (tmp_path / "m.pt", "give a .tflite")]  # fmt: skip
    for bad, message in cases:
        proc = run(runtime, "predict", photo, "--weights", bad, check_rc=2)
        assert proc.stderr.count("\n") == 1 and str(bad) in proc.stderr and message in proc.stderr, proc.stderr
