"""``effnet serve`` under hostile or careless clients and files: decoding under a pixel budget,
slow bodies, odd ``top_k`` values, an OpenVINO ``.bin`` changed under the server, an API key and
HTTPS. Real server processes on free loopback ports, as in test_serve.py (whose fixtures these use)."""

import asyncio
import contextlib
import io
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
from PIL import Image

from tests.conftest import import_required, require_component, run_cli
from tests.e2e.test_serve import metric, server

httpx = import_required("httpx")
import_required("starlette", "the serve extra (pip install -e '.[dev]') installs it")

MB = 1024 * 1024


def solid_png(side: int, colour=(120, 30, 200)) -> bytes:
    """A side x side RGB PNG of one colour: a few kB on the wire, side² x 3 bytes decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def post(url, body, kind="image/png", **kwargs):
    return httpx.post(url, content=body, headers={"content-type": kind, **kwargs.pop("headers", {})}, timeout=120,
                      **kwargs)  # fmt: skip


def test_decoding_holds_at_most_the_decode_budget_of_pixels(files):
    """16 images of 16 Mpx in one batch (~1 MB on the wire, ~240 MB each to decode): with a
    budget of one such image they decode one after the other, and the server's peak memory grows
    by about one image's decoding, not sixteen. A single image over the budget alone is a 413."""
    root, _ = files
    big = solid_png(4000)  # 16 Mpx
    uploads = [("files", (f"big{i}.png", big)) for i in range(16)]
    with server("--weights", root / "dynamic.onnx", "--max-pixels", 40_000_000, "--decode-budget", 16,
                "--decode-wait", 60) as (url, proc):  # fmt: skip
        before = memory_mb(proc.pid, "VmRSS")
        answer = httpx.post(f"{url}/v1/predict/batch", files=uploads, timeout=120)
        assert answer.status_code == 200, answer.text
        assert all("top" in r for r in answer.json()["results"])
        grown = memory_mb(proc.pid, "VmHWM") - before
        # one image at a time costs ~240 MB at the peak; sixteen at once (two cores, a thread each) ~2 GB
        assert grown < 700, f"peak memory grew by {grown:.0f} MB"
        over = post(f"{url}/v1/predict", solid_png(4500))  # 20 Mpx: under --max-pixels, over the budget
        assert over.status_code == 413 and over.json()["kind"] == "too_many_pixels", over.text
        assert "--decode-budget" in over.json()["error"]
        assert post(f"{url}/v1/predict", big).status_code == 200  # the budget was given back


def test_no_decode_budget_in_time_is_503_and_large_images_are_refused_by_default(files):
    root, images = files
    big = solid_png(4000)
    with server("--weights", root / "dynamic.onnx", "--decode-budget", 16, "--decode-wait", 0) as (url, proc):
        # The default --max-pixels (16 M) refuses 36 Mpx (~0.5-0.8 GB to decode) from the header.
        answer = post(f"{url}/v1/predict", solid_png(6000))
        assert answer.status_code == 413 and answer.json()["kind"] == "too_many_pixels", answer.text
        answer = httpx.post(f"{url}/v1/predict/batch", files=[("f", (f"{i}.png", big)) for i in range(4)], timeout=60)
        assert answer.status_code == 503, answer.text
        assert answer.json()["kind"] == "decode_busy" and answer.headers["retry-after"] == "1"
        assert metric(url, "effnet_errors_total", kind="decode_busy") >= 1
        assert metric(url, "effnet_errors_total", kind="internal") == 0
        # The batch's first image still decodes (~0.3-1.5 s); then its budget is back.
        deadline = time.perf_counter() + 30
        while (answer := post(f"{url}/v1/predict", images[1].read_bytes())).status_code == 503:
            assert answer.json()["kind"] == "decode_busy" and time.perf_counter() < deadline
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert proc.poll() is None


def slow_client(port: int, results: list, index: int, seconds: float) -> None:
    """POST a 1,000-byte body at 2 bytes/s; record (seconds until the server answered or closed,
    the first bytes of its answer)."""
    start = time.perf_counter()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 1000\r\n\r\n")  # fmt: skip
        while time.perf_counter() - start < seconds:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                answered = time.perf_counter() - start
                with contextlib.suppress(OSError):  # the answer, up to the server's close
                    while chunk := sock.recv(4096):
                        answer += chunk
                results[index] = (answered, answer)
                return
            try:
                sock.sendall(b"\0")
            except OSError:  # closed by the server
                break
    results[index] = (time.perf_counter() - start, answer)


def test_slow_bodies_get_408_and_do_not_hold_the_queue(files):
    root, images = files
    body = images[1].read_bytes()
    args = ("--weights", root / "dynamic.onnx", "--queue", 2, "--body-timeout", 2, "--max-wait-ms", 1)
    with server(*args) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        results = [None] * 4
        threads = [threading.Thread(target=slow_client, args=(port, results, i, 15)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the slow clients are sending their bodies now
        for _ in range(3):  # a client that sends its body at once is served meanwhile
            answer = post(f"{url}/v1/predict", body)
            assert answer.status_code == 200, answer.text
        for thread in threads:
            thread.join()
        for seconds, answer in results:
            assert seconds < 5, f"no answer within the 2 s deadline after {seconds:.1f} s"
            assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer[:200]
        assert any(answer.startswith(b"HTTP/1.1 408") for _, answer in results)
        assert b'"kind":"body_timeout"' in next(a for _, a in results if a)
        assert metric(url, "effnet_errors_total", kind="body_timeout") == 4
        assert proc.poll() is None


def test_bodies_held_at_once_are_bounded_by_queue_times_max_body(files):
    """With --queue 1 --max-body-mb 1, a client that sent 900 kB of its body and stalls leaves room
    for no other body of more than ~150 kB: 503 at once; after its 408 the room is back."""
    root, images = files
    body = images[1].read_bytes()  # a ~450 kB PNG
    assert 200_000 < len(body) < 1_000_000
    args = ("--weights", root / "dynamic.onnx", "--queue", 1, "--max-body-mb", 1, "--body-timeout", 3)
    with server(*args) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                            b"Content-Length: 1000000\r\n\r\n" + b"\0" * 900_000)  # fmt: skip
            time.sleep(0.5)
            answer = post(f"{url}/v1/predict", body)
            assert answer.status_code == 503 and answer.json()["kind"] == "overloaded", answer.text
            assert answer.headers["retry-after"] == "1"
            assert stalled.recv(4096).startswith(b"HTTP/1.1 408")
        assert post(f"{url}/v1/predict", body).status_code == 200
        assert proc.poll() is None


@pytest.mark.parametrize("top_k", ["²", "١", "５", "9" * 5000, "1" * 7, "-1", "+3", " 3", "3.0", ""])
def test_top_k_is_ascii_digits_of_bounded_length(top_k):
    from starlette.datastructures import QueryParams

    from effnet.deploy.serve import RequestError, _top_k

    class Request:  # what _top_k reads of a Starlette request
        query_params = QueryParams({"top_k": top_k})

    class Classifier:
        names = ["a", "b", "c", "d", "e"]

    with pytest.raises(RequestError) as caught:
        _top_k(Request(), Classifier())
    assert caught.value.status == 400 and caught.value.kind == "bad_argument"
    assert len(str(caught.value)) < 200


def test_odd_top_k_values_get_a_json_400_from_the_server(files):
    root, images = files
    jpeg = images[0].read_bytes()
    with server("--weights", root / "dynamic.onnx") as (url, proc):
        for top_k in ("²", "9" * 5000, "٣"):
            answer = httpx.post(f"{url}/v1/predict", params={"top_k": top_k}, content=jpeg,
                                headers={"content-type": "image/jpeg"})  # fmt: skip
            assert answer.status_code == 400, answer.text
            assert answer.json()["kind"] == "bad_argument"
        assert metric(url, "effnet_errors_total", kind="internal") == 0
        answer = httpx.post(f"{url}/v1/predict?top_k=999999", content=jpeg, headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200 and len(answer.json()["top"]) == 5  # all the classes
        assert proc.poll() is None


def test_openvino_ir_rewritten_or_truncated_while_served_changes_nothing(files, tmp_path):
    import_required("openvino")
    root, images = files
    shutil.copy(root / "dynamic.xml", tmp_path / "m.xml")
    shutil.copy(root / "dynamic.bin", tmp_path / "m.bin")
    bin_path = tmp_path / "m.bin"
    body = images[0].read_bytes()
    with server("--weights", tmp_path / "m.xml", "--max-wait-ms", 1) as (url, proc):
        want = post(f"{url}/v1/predict?top_k=5", body, "image/jpeg").json()["top"]
        # Overwritten in place (the same inode, as `cp other.bin m.bin` does): other weights.
        original = bin_path.read_bytes()
        with open(bin_path, "r+b") as f:
            f.write(bytes(reversed(original)))
        got = post(f"{url}/v1/predict?top_k=5", body, "image/jpeg")
        assert got.status_code == 200 and got.json()["top"] == want, got.text
        # Truncated in place: a mapped file would kill the server with SIGBUS here.
        with open(bin_path, "r+b") as f:
            f.truncate(0)
        got = post(f"{url}/v1/predict?top_k=5", body, "image/jpeg")
        assert got.status_code == 200 and got.json()["top"] == want, got.text
        assert proc.poll() is None


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, made by Debian's openssl."""
    require_component("openssl", shutil.which("openssl") is not None, "Debian's openssl package")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def test_api_key_over_https(files, tmp_path, monkeypatch):
    root, images = files
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("EFFNET_API_KEY", "s3cret-key")
    jpeg = images[0].read_bytes()
    with server("--weights", root / "dynamic.onnx", "--ssl-certfile", cert, "--ssl-keyfile", key) as (url, proc):
        assert url.startswith("https://127.0.0.1:")
        assert "warning" not in proc.stderr.readline()  # loopback: no warning
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=context, timeout=30) as client:
            assert client.get(f"{url}/healthz").json()["status"] == "ready"  # open, for load balancers
            headers = {"content-type": "image/jpeg"}
            for auth in (None, "Bearer wrong", "Basic s3cret-key", "Bearer s3cret-key-and-more", "Bearer"):
                extra = {"authorization": auth} if auth else {}
                answer = client.post(f"{url}/v1/predict", content=jpeg, headers={**headers, **extra})
                assert answer.status_code == 401, (auth, answer.text)
                assert answer.json()["kind"] == "unauthorized" and answer.headers["www-authenticate"] == "Bearer"
            for path in ("/metrics", "/v1/model"):
                assert client.get(url + path).status_code == 401
            good = {"authorization": "Bearer s3cret-key"}
            answer = client.post(f"{url}/v1/predict", content=jpeg, headers={**headers, **good})
            assert answer.status_code == 200 and answer.json()["top"]
            assert "s3cret" not in client.get(f"{url}/v1/model", headers=good).text
            assert client.get(f"{url}/metrics", headers=good).status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)
        assert proc.poll() is None


def test_binding_beyond_loopback_without_a_key_warns(files):
    root, _ = files
    with server("--weights", root / "dynamic.onnx", "--host", "0.0.0.0") as (url, proc):
        line = proc.stderr.readline()
        assert line.startswith("effnet serve: warning:") and "0.0.0.0" in line and "EFFNET_API_KEY" in line, line
        assert httpx.get(f"{url}/healthz").status_code == 200


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ssl-certfile", "{tmp}/cert.pem"], "--ssl-certfile and --ssl-keyfile go together"),
        (["--ssl-certfile", "{tmp}/none.pem", "--ssl-keyfile", "{tmp}/none.pem"], "cannot load them"),
        (["--api-key", " "], "--api-key is empty"),
        (["--body-timeout", "0"], "--body-timeout"),
        (["--decode-budget", "nan"], "--decode-budget"),
    ],
)
def test_bad_protection_flags_are_one_line(files, tmp_path, args, message):
    root, _ = files
    result = run_cli("serve", "--weights", root / "dynamic.onnx", *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_pixel_budget_is_first_come_first_served_and_forgets_waiters_that_gave_up():
    from effnet.deploy.serve import BudgetTimeout, PixelBudget

    async def scenario():
        budget = PixelBudget(10)
        await budget.acquire(8, 1)
        late = asyncio.create_task(budget.acquire(5, 0.05))  # gives up
        big = asyncio.create_task(budget.acquire(6, 5))
        await asyncio.sleep(0)
        small = asyncio.create_task(budget.acquire(1, 5))  # fits now, but waits behind big
        await asyncio.sleep(0.1)
        with pytest.raises(BudgetTimeout):
            await late
        assert not big.done() and not small.done()
        budget.release(8)
        await asyncio.wait_for(asyncio.gather(big, small), 1)
        assert budget.used == 7 and not budget.waiters

    asyncio.run(scenario())
