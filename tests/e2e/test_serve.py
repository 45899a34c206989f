"""``effnet serve``: real server processes on free loopback ports, real HTTP (httpx), the answers
checked against ``effnet predict``'s, every bad request's 4xx, batching, overload, SIGTERM."""

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from effnet.deploy.engines import open_model
from effnet.deploy.predict import predict
from tests.conftest import import_required, require_component, requires, run_cli
from tests.e2e.conftest import CLASSES, SIDE

httpx = import_required("httpx")
import_required("starlette", "the serve extra (pip install -e '.[dev]') installs it")


@contextmanager
def server(*args, expect_exit=0):
    """``effnet serve`` on a free port; yields (base url, process). On leaving: SIGTERM, and
    the exit code must be ``expect_exit``."""
    cmd = [sys.executable, "-m", "effnet", "serve", "--port", "0", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"server did not start: {proc.communicate(timeout=30)[1]}")
    url = json.loads(line)["url"]
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == expect_exit, err


def metric(url: str, name: str, **labels) -> float:
    """One sample of GET /metrics (0 when the series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# a batch-1 .tflite: the server's batches run image by image, each worker thread on its own interpreter
ENGINES = {"m.safetensors": "torch", "dynamic.onnx": "onnxruntime", "dynamic.xml": "openvino",
           "static.tflite": "litert"}  # fmt: skip


@pytest.mark.parametrize("weights", list(ENGINES))
def test_answers_equal_effnet_predict(files, weights):
    root, images = files
    require_component(ENGINES[weights], (root / weights).exists(), "its extra installs it; no file was written")
    expected, _ = predict(open_model(str(root / weights)).model, [str(p) for p in images], top_k=3)
    # two workers: two engine calls at once on one loaded model (OpenVINO needs a request per thread)
    with server("--weights", root / weights, "--workers", 2, "--max-wait-ms", 1) as (url, _):
        assert httpx.get(f"{url}/healthz").json()["status"] == "ready"
        described = httpx.get(f"{url}/v1/model").json()
        assert described["classes"] == CLASSES and described["preprocessing"]["resolution"] == SIDE
        assert described["engine"] == ENGINES[weights]
        for path, want in zip(images, expected, strict=True):
            kind = "image/png" if path.suffix == ".png" else "image/jpeg"
            got = httpx.post(f"{url}/v1/predict?top_k=3", content=path.read_bytes(), headers={"content-type": kind})
            assert got.status_code == 200, got.text
            assert_same_top(got.json()["top"], want.result["top"])
        # Multipart, several files, one of them not an image: the others keep their answers.
        uploads = [("files", (p.name, p.read_bytes())) for p in images] + [("files", ("notes.txt", b"hello"))]
        got = httpx.post(f"{url}/v1/predict/batch?top_k=3", files=uploads)
        assert got.status_code == 200, got.text
        results = got.json()["results"]
        for result, want in zip(results[:-1], expected, strict=True):
            assert_same_top(result["top"], want.result["top"])
        assert results[-1]["image"] == "notes.txt" and results[-1]["kind"] == "bad_image"
        assert metric(url, "effnet_images_total") == 2 * len(images)
        assert metric(url, "effnet_requests_total", endpoint="batch", code="200") == 1


def assert_same_top(got, want):
    """The same classes in the same order; probabilities equal to float32 rounding (a batch of
    several images takes other conv kernels than predict's batches of one: ~2e-5 apart)."""
    assert [(t["label"], t["index"]) for t in got] == [(t["label"], t["index"]) for t in want]
    np.testing.assert_allclose([t["prob"] for t in got], [t["prob"] for t in want], atol=1e-4)


def bomb_png() -> bytes:
    """A 12,000 x 12,000 black PNG: ~15 kB on the wire, 432 MB once decoded to RGB."""
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_bad_requests_get_a_json_4xx_and_never_reach_the_engine(files):
    root, images = files
    jpeg = images[0].read_bytes()
    cases = [
        ("POST", "/v1/predict", b"", "image/png", 400, "empty_body"),
        ("POST", "/v1/predict", jpeg[: len(jpeg) // 2], "image/jpeg", 400, "bad_image"),
        ("POST", "/v1/predict", b"just some text", "image/png", 400, "bad_image"),
        ("POST", "/v1/predict", b"just some text", "text/plain", 415, "bad_content_type"),
        ("POST", "/v1/predict", jpeg, "application/json", 415, "bad_content_type"),
        ("POST", "/v1/predict", bomb_png(), "image/png", 413, "too_many_pixels"),
        ("POST", "/v1/predict", b"\0" * (3 * 1024 * 1024), "image/png", 413, "body_too_large"),
        ("POST", "/v1/predict?top_k=0", jpeg, "image/jpeg", 400, "bad_argument"),
        ("POST", "/v1/predict?top_k=x", jpeg, "image/jpeg", 400, "bad_argument"),
        ("POST", "/v1/predict", b"--x\r\nbroken", "multipart/form-data; boundary=x", 400, "no_image"),
        ("POST", "/v1/predict", b"--x\r\nbroken", "multipart/form-data", 400, "bad_form"),
        ("GET", "/v1/predict", None, None, 405, "bad_method"),
        ("GET", "/nowhere", None, None, 404, "not_found"),
    ]
    with server("--weights", root / "dynamic.onnx", "--max-body-mb", "2") as (url, proc):
        for method, path, body, kind, status, error_kind in cases:
            headers = {"content-type": kind} if kind else {}
            answer = httpx.request(method, url + path, content=body, headers=headers)
            assert answer.status_code == status, (path, kind, answer.text)
            assert answer.json()["kind"] == error_kind and answer.json()["error"]
        assert metric(url, "effnet_images_total") == 0  # nothing reached the engine
        assert metric(url, "effnet_errors_total", kind="bad_image") == 2
        # A body that never says its length is cut off as it streams past the limit.
        chunks = (b"\0" * 65536 for _ in range(64))  # 4 MB, chunked transfer encoding
        answer = httpx.post(f"{url}/v1/predict", content=chunks, headers={"content-type": "image/png"})
        assert answer.status_code == 413 and answer.json()["kind"] == "body_too_large"
        ok = httpx.post(f"{url}/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"})
        assert ok.status_code == 200 and proc.poll() is None  # still serving


def test_concurrent_requests_run_as_batches(files):
    root, images = files
    body = images[1].read_bytes()

    async def burst(url, n):
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"{url}/v1/predict", content=body, headers={"content-type": "image/png"})
                    for _ in range(n)
                )  # fmt: skip
            )
        return [a.status_code for a in answers]

    with server("--weights", root / "dynamic.onnx", "--max-batch", "8", "--max-wait-ms", "200") as (url, _):
        assert asyncio.run(burst(url, 16)) == [200] * 16
        calls, images_run = metric(url, "effnet_batch_size_count"), metric(url, "effnet_batch_size_sum")
        assert images_run == 16 and calls < 16  # at least one call ran several requests
        assert metric(url, "effnet_batch_size_bucket", le="8.0") == calls  # never above --max-batch


def test_overload_answers_503_with_retry_after_and_never_hangs(files):
    root, images = files
    body = images[1].read_bytes()

    async def flood(url, n):
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{url}/v1/predict", content=body, headers={"content-type": "image/png"})
                    for _ in range(n)
                )  # fmt: skip
            )

    # A queue of 2 and batches that wait a second for company: a burst of 12 overflows it.
    with server("--weights", root / "dynamic.onnx", "--queue", "2", "--max-wait-ms", "1000") as (url, _):
        answers = asyncio.run(flood(url, 12))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) == {200, 503} and codes.count(200) >= 1, codes
        refused = [a for a in answers if a.status_code == 503]
        assert all(a.headers["retry-after"] == "1" and a.json()["kind"] == "overloaded" for a in refused)
        assert metric(url, "effnet_errors_total", kind="overloaded") == len(refused)
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(files):
    root, images = files
    body = images[1].read_bytes()
    with server("--weights", root / "dynamic.onnx", "--max-wait-ms", "1500") as (url, proc):

        async def request_then_sigterm():
            async with httpx.AsyncClient(timeout=30) as client:
                pending = asyncio.create_task(
                    client.post(f"{url}/v1/predict", content=body, headers={"content-type": "image/png"})
                )
                await asyncio.sleep(0.5)  # the request now waits for its batch
                proc.send_signal(signal.SIGTERM)
                return await pending

        answer = asyncio.run(request_then_sigterm())
        assert answer.status_code == 200 and answer.json()["top"]
        assert proc.wait(timeout=30) == 0
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # no longer listening


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "{root}/missing.onnx"], "no such ONNX file"),
        (["--weights", "{root}/static.onnx"], "static batch of 1"),
        (["--weights", "{root}/dynamic.onnx", "--max-wait-ms", "-1"], "--max-wait-ms"),
        (["--weights", "{root}/dynamic.onnx", "--port", "70000"], "--port must be 0-65535"),
        (["--weights", "{root}/dynamic.onnx", "--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
    ],
)
def test_bad_start_up_is_one_line(files, args, message):
    root, _ = files
    result = run_cli("serve", *(a.format(root=root) for a in args))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_is_one_line(files):
    root, _ = files
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.perf_counter()
        result = run_cli("serve", "--weights", root / "dynamic.onnx", "--port", port)
    assert result.returncode == 2 and f"{port} is already in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and time.perf_counter() - start < 30


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


needs_chromium = requires("chromium and chromium-driver", os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
                          "make test installs Debian's chromium and chromium-driver")  # fmt: skip


def browser():
    """Debian's headless chromium through selenium and the packaged chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,800"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@needs_chromium
def test_page_uploads_an_image_and_shows_the_top_5_in_a_real_browser(files, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, images = files
    with server("--weights", root / "dynamic.onnx") as (url, _):
        expected = httpx.post(f"{url}/v1/predict?top_k=5", content=images[0].read_bytes(),
                              headers={"content-type": "image/jpeg"}).json()["top"]  # fmt: skip
        driver = browser()
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
            assert "5 classes" in driver.find_element(By.ID, "model").text
            driver.find_element(By.ID, "file").send_keys(str(images[0]))
            WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .row")) == 5)
            rows = driver.find_elements(By.CSS_SELECTOR, "#results .row")
            shown = [(r.find_element(By.CLASS_NAME, "label").text, r.find_element(By.CLASS_NAME, "prob").text)
                     for r in rows]  # fmt: skip
            assert shown == [(t["label"], f"{t['prob'] * 100:.1f}%") for t in expected]
            widths = [r.find_element(By.CLASS_NAME, "bar").size["width"] for r in rows]
            assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
            assert driver.find_element(By.ID, "preview").is_displayed()
            driver.save_screenshot(str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").read_bytes()[:4] == b"\x89PNG"
        finally:
            driver.quit()
