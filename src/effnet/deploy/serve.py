"""``effnet serve``: a trained model of any task behind HTTP, with dynamic batching and Prometheus metrics.

Built on Starlette (routing, requests, multipart parsing through python-multipart) served by
uvicorn. FastAPI would add pydantic schemas to routes whose input is image bytes, and LitServe
its own worker processes and batching loop, where we need ours to bound the queue and count
what it does. The server is a thin layer over the API: ``open_model`` picks the engine,
``decode_rgb`` decodes with the same rules as ``effnet predict`` and the preprocessing that
travels with the weights prepares the image; ``DynamicBatcher`` groups requests.

Every expected failure answers a 4xx (503 when overloaded) with ``{"error": ..., "kind": ...}``
and never reaches the engine: bodies over ``--max-body-mb`` (refused from Content-Length, or
as soon as the stream passes the limit), bodies not in within ``--body-timeout`` (408), images
over ``--max-pixels`` (refused from the header, before decoding), undecodable or empty bodies,
unsupported content types, a missing or wrong API key (401).

Resources are bounded in three places: a request takes one of the ``--queue`` slots only once its
body is in (a slow client cannot hold one), decoding takes the image's pixels from a budget shared
by all requests (``--decode-budget``; a decoded pixel costs ~15-25 bytes on the way to the
model's input), and the bodies being held, read or not yet answered, add up to at most
``--queue`` x ``--max-body-mb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import ssl
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import torch

from effnet.core.errors import UsageError, first_line
from effnet.core.extras import require
from effnet.datasets.images import ImageDecodeError, PixelLimitError, decode_rgb
from effnet.deploy.batching import DynamicBatcher, Overloaded
from effnet.deploy.choices import MOBILE_FORMATS
from effnet.deploy.engines import inference_form
from effnet.tasks.registry import entry_of, task_of

IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 16  # images per engine call
    max_wait_ms: float = 5.0  # how long a batch waits for more images after its first
    workers: int = 1  # engine calls at once (threads); more only helps with cores to spare
    max_body_mb: float = 10.0
    queue: int = 256  # requests admitted at once; beyond it: 503 with Retry-After
    # Larger images are refused from their header (decompression bombs). 16 Mpx takes a 16 MP
    # camera's 4920x3264 and phones' 12 MP (4032x3024) at full size, and costs ~0.25-0.4 GB to decode.
    max_pixels: int = 16_000_000
    max_images: int = 64  # images in one /v1/predict/batch request
    body_timeout: float = 10.0  # seconds for a request's whole body to arrive; beyond: 408
    # Megapixels decoded at once by all requests together: 4 images of --max-pixels, ~1-1.5 GB.
    decode_budget: float = 64.0
    decode_wait: float = 5.0  # seconds an image waits for decode budget; beyond: 503 with Retry-After

    def __post_init__(self):
        checks = {
            "max_batch": self.max_batch >= 1,
            "max_wait_ms": math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0,
            "workers": self.workers >= 1,
            "max_body_mb": math.isfinite(self.max_body_mb) and self.max_body_mb > 0,
            "queue": self.queue >= 1,
            "max_pixels": self.max_pixels >= 1,
            "max_images": self.max_images >= 1,
            "body_timeout": math.isfinite(self.body_timeout) and self.body_timeout > 0,
            "decode_budget": math.isfinite(self.decode_budget) and self.decode_budget * 1e6 >= 1,
            "decode_wait": math.isfinite(self.decode_wait) and self.decode_wait >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise UsageError(f"--{name.replace('_', '-')}={getattr(self, name)!r} is out of range")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def decode_budget_pixels(self) -> int:
        return int(self.decode_budget * 1_000_000)


class RequestError(Exception):
    """An expected failure of one request: its HTTP status, a message and a kind for the metrics."""

    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers or {}


class BudgetTimeout(Exception):
    """The decode budget did not free enough pixels in time."""


class PixelBudget:
    """A semaphore counted in decoded pixels, shared by every request of one event loop. Waiters
    are served first come, first served, so a large image is not starved by a stream of small ones."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self.waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, pixels: int, timeout: float) -> None:
        """Take ``pixels`` (at most ``total``), waiting up to ``timeout`` seconds; else BudgetTimeout."""
        if not self.waiters and self.used + pixels <= self.total:
            self.used += pixels
            return
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((pixels, future))
        try:
            await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():
                self.release(pixels)  # granted just as the wait ended
            else:
                self._grant()  # this waiter may have held back the ones behind it
            if isinstance(exc, TimeoutError):
                raise BudgetTimeout from None
            raise

    def release(self, pixels: int) -> None:
        self.used -= pixels
        self._grant()

    def _grant(self) -> None:
        while self.waiters:
            pixels, future = self.waiters[0]
            if future.done():  # gave up waiting
                self.waiters.popleft()
                continue
            if self.used + pixels > self.total:
                return
            self.waiters.popleft()
            self.used += pixels
            future.set_result(None)


def image_pixels(data: bytes, name: str, max_pixels: int) -> int | None:
    """Width x height from the image's header, without decoding a pixel (None when Pillow cannot
    read the header: decoding will then say why)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - any unreadable header: decode_rgb gives the error
        return None
    if width * height > max_pixels:
        raise PixelLimitError(name, f"refused, {width}x{height} is over the limit of {max_pixels:,} pixels")
    return width * height


class Metrics:
    """The Prometheus series, in a registry of their own (not the process-global default)."""

    def __init__(self, depth):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series double the page and tell nothing here
        self.registry = CollectorRegistry()
        self.requests = Counter("effnet_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)  # fmt: skip
        self.errors = Counter("effnet_errors", "Refused or failed requests by kind", ["kind"], registry=self.registry)
        self.latency = Histogram("effnet_request_seconds", "Time from request to response", ["endpoint"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)  # fmt: skip
        self.batch = Histogram("effnet_batch_size", "Images per engine call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)  # fmt: skip
        self.inference = Histogram("effnet_inference_seconds", "Time of one engine call",
                                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
                                   registry=self.registry)  # fmt: skip
        self.images = Counter("effnet_images", "Images classified", registry=self.registry)
        self.depth = Gauge("effnet_queue_depth", "Images waiting for a batch", registry=self.registry)
        self.depth.set_function(depth)
        self.in_flight = Gauge("effnet_requests_in_flight", "Requests admitted and not answered",
                               registry=self.registry)  # fmt: skip

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Predictor:
    """The model side of the server, for a model of any task: its task's input preparation, batching
    and answer format (the same as ``effnet predict``'s). Knows nothing of HTTP."""

    def __init__(self, trained, engine: str, options: ServeOptions):
        model = trained.model
        self.entry = entry_of(model)
        batch = getattr(model, "input", {}).get("batch_size")  # an export's fixed batch, None if dynamic
        if engine in MOBILE_FORMATS:
            # LiteRT and ExecuTorch graphs have a fixed batch by nature (as on the device): one image
            # per engine call, --workers of them at once
            options = replace(options, max_batch=batch or 1)
        if batch is not None and options.max_batch > 1 and not self.entry.per_image:
            raise UsageError(
                f"--weights {trained.path}: exported with a static batch of {batch}, so it cannot run dynamic "
                f"batches; export again with --dynamic-batch, or serve with --max-batch 1"
            )
        self.options, self.engine, self.source = options, engine, str(trained.path)
        self.task, self.raw = task_of(model), model  # the model as opened: what the entry formats with
        self.config, self.preprocessing = model.config, model.preprocessing
        self.names = list(model.class_names) if model.class_names else [str(i) for i in range(model.config.num_classes)]
        self.model, self._prepare = inference_form(model), self.entry.preparer(model)
        self.metrics = Metrics(lambda: self.batcher.depth)
        self.budget = PixelBudget(options.decode_budget_pixels)
        self.batcher = DynamicBatcher(self._run, max_batch=options.max_batch, max_wait_ms=options.max_wait_ms,
                                      capacity=options.queue * options.max_images, workers=options.workers,
                                      on_batch=self.metrics.on_batch, collate=list)  # fmt: skip

    @torch.inference_mode()
    def _run(self, inputs: list) -> list:
        return self.entry.run(self.model, inputs)

    def warm_up(self) -> None:
        """One call at batch 1 and one at the largest batch, so no request pays for the engine's
        first-call set-up (allocations, kernel choice)."""
        channels, side = self.entry.input_size(self.config)
        for n in sorted({1, self.options.max_batch}):
            self._run([torch.zeros(channels, side, side)] * n)

    def prepare(self, data: bytes, name: str):
        """Decode and prepare one upload as the model's input (run in a thread: it is CPU work)."""
        from torchvision.transforms import v2

        image = decode_rgb(data, name, max_pixels=self.options.max_pixels)
        return self._prepare(image, v2.functional.pil_to_tensor(image))

    def answer(self, output, k: int) -> dict:
        return self.entry.format(self.raw, output, top_k=k)

    def describe(self) -> dict:
        return {
            "name": self.config.name,
            "task": self.task,
            "classes": self.names,
            "preprocessing": self.preprocessing.to_dict(),
            "engine": self.engine,
            "weights": Path(self.source).name,
            "serving": asdict(self.options),
        }


def _error(exc: RequestError):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": str(exc), "kind": exc.kind}, status_code=exc.status, headers=exc.headers)


async def _read_body(request, limit: int, timeout: float, hold=None) -> bytes:
    """The body, refused as soon as it is known to be over ``limit``: from Content-Length before
    reading anything, else while it streams in, so a huge upload is never held in memory; and
    refused (408, connection closed) unless all of it is in within ``timeout`` seconds, so a
    client that trickles its body cannot hold the server's memory or a task for long.
    ``hold(n)`` is told of every chunk kept (it raises to refuse it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "body_too_large", f"body of {int(declared):,} bytes is over the limit of {limit:,}")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, "body_too_large", f"body is over the limit of {limit:,} bytes")
                if hold is not None:
                    hold(len(chunk))
                chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "client_disconnected", "the client left before sending the whole body") from None
    except TimeoutError:
        raise RequestError(408, "body_timeout", f"the body did not arrive within {timeout:g} s (--body-timeout); "
                           f"{size:,} bytes came", {"Connection": "close"}) from None  # fmt: skip
    return b"".join(chunks)


async def _uploads(request, body: bytes, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request (whose ``body`` was read already): a raw image
    body, or the files of a multipart form (any field names)."""
    from starlette.requests import Request

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body:
        raise RequestError(400, "empty_body", "empty body: send an image (or a multipart form with image files)")
    if kind.startswith(IMAGE_TYPES):
        return [("body", body)]
    if kind != "multipart/form-data":
        shown = kind or "none"
        raise RequestError(415, "bad_content_type",
                           f"content type {shown!r} is not an image: send image/* or application/octet-stream "
                           "bytes, or multipart/form-data with image files")  # fmt: skip

    async def replay():  # the form parser reads the body we already hold (and limited)
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=max_files)
    except Exception as exc:  # noqa: BLE001 - python-multipart's and Starlette's parse errors
        raise RequestError(400, "bad_form", f"unreadable multipart form ({exc})") from None
    files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
    await form.close()
    if not files:
        raise RequestError(400, "no_image", "the multipart form holds no file")
    return files


def _top_k(request, predictor: Predictor) -> int:
    """``top_k`` from the query: ASCII digits only (``str.isdigit`` takes "²", which ``int`` does
    not) and at most 6 of them (``int`` refuses 4,300+ digits); more than the classes means all."""
    text = request.query_params.get("top_k", "5")
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or int(text) < 1:
        shown = text if len(text) <= 20 else f"{text[:20]}... ({len(text)} characters)"
        raise RequestError(400, "bad_argument", f"top_k must be a whole number from 1 to 999999, got {shown!r}")
    return min(int(text), len(predictor.names))


class Server:
    """The Starlette app around one ``Predictor``; ``handle`` bounds the requests in flight and the
    bytes of bodies held. With ``api_key``, every route but ``/healthz`` and the static page at
    ``/`` wants ``Authorization: Bearer <api_key>`` (401 otherwise)."""

    def __init__(self, predictor: Predictor, api_key: str | None = None):
        self.predictor, self.in_flight, self.draining = predictor, 0, False
        self.api_key = api_key.encode() if api_key else None
        self.held = 0  # bytes of request bodies held, read or being read
        self.max_held = predictor.options.queue * predictor.options.max_body_bytes
        self.html = resources.files("effnet.deploy").joinpath("page.html").read_text(encoding="utf-8")
        self.app = self._build_app()

    def _build_app(self):
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.guarded(self.metrics), methods=["GET"]),
            Route("/v1/model", self.guarded(self.model), methods=["GET"]),
            Route("/v1/predict", functools.partial(self.handle, "predict", self.predict), methods=["POST"]),
            Route("/v1/predict/batch", functools.partial(self.handle, "batch", self.predict_batch), methods=["POST"]),
        ]

        async def not_found(request, exc):
            kind = "not_found" if exc.status_code == 404 else "bad_method"
            self.predictor.metrics.errors.labels(kind).inc()
            return _error(RequestError(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}"))

        @contextlib.asynccontextmanager
        async def lifespan(app):
            self.predictor.batcher.start()
            yield
            await self.predictor.batcher.stop()

        return Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)

    def check_key(self, request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a wrong key was right
        if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key)):
            raise RequestError(401, "unauthorized", "missing or wrong API key: send 'Authorization: Bearer <key>'",
                               {"WWW-Authenticate": "Bearer"})  # fmt: skip

    def guarded(self, endpoint):
        """``endpoint`` behind the API key (when there is one)."""

        @functools.wraps(endpoint)
        async def guard(request):
            try:
                self.check_key(request)
            except RequestError as exc:
                self.predictor.metrics.errors.labels(exc.kind).inc()
                return _error(exc)
            return await endpoint(request)

        return guard

    async def handle(self, endpoint: str, work, request):
        from starlette.responses import JSONResponse

        metrics, options, start = self.predictor.metrics, self.predictor.options, time.perf_counter()
        held = 0

        def hold(size: int) -> None:
            nonlocal held
            if self.held + size > self.max_held:
                raise RequestError(503, "overloaded", "the server holds as many request bodies as it takes "
                                   "(--queue x --max-body-mb); retry later", {"Retry-After": "1"})  # fmt: skip
            self.held += size
            held += size

        try:
            self.check_key(request)
            # The body first, under its deadline: a slot of --queue is taken only by a request
            # that can be worked on, so clients that send slowly do not crowd out the others.
            body = await _read_body(request, options.max_body_bytes, options.body_timeout, hold)
            if self.in_flight >= options.queue:
                raise RequestError(503, "overloaded", f"{self.in_flight} requests are in flight, the most this "
                                   "server takes (--queue); retry later", {"Retry-After": "1"})  # fmt: skip
            self.in_flight += 1
            metrics.in_flight.inc()
            try:
                response = JSONResponse(await work(request, body))
            except RequestError:
                raise
            except Exception as exc:  # noqa: BLE001 - the server must outlive a failed request
                logging.getLogger("effnet.serve").exception("request failed")
                raise RequestError(500, "internal", f"internal error ({first_line(exc)})") from None
            finally:
                self.in_flight -= 1
                metrics.in_flight.dec()
        except RequestError as exc:
            metrics.errors.labels(exc.kind).inc()
            response = _error(exc)
        finally:
            self.held -= held
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    async def _classify(self, name: str, data: bytes, k: int) -> dict:
        from starlette.concurrency import run_in_threadpool

        predictor, options = self.predictor, self.predictor.options
        try:
            pixels = await run_in_threadpool(image_pixels, data, name, options.max_pixels)
            if pixels is not None and pixels > predictor.budget.total:
                raise PixelLimitError(name, f"refused, its {pixels:,} pixels are over the decode budget of "
                                      f"{predictor.budget.total:,} (--decode-budget)")  # fmt: skip
            pixels = pixels or 0  # an unreadable header: decoding fails at once
            try:
                await predictor.budget.acquire(pixels, options.decode_wait)
            except BudgetTimeout:
                raise RequestError(503, "decode_busy", f"no decode budget came free within {options.decode_wait:g}"
                                   " s (--decode-budget, --decode-wait); retry later",
                                   {"Retry-After": "1"}) from None  # fmt: skip
            try:
                tensor = await run_in_threadpool(predictor.prepare, data, name)
            finally:
                predictor.budget.release(pixels)
        except PixelLimitError as exc:
            raise RequestError(413, "too_many_pixels", str(exc)) from None
        except ImageDecodeError as exc:
            raise RequestError(400, "bad_image", str(exc)) from None
        except MemoryError:
            raise RequestError(503, "out_of_memory", "not enough memory to decode the image; retry later",
                               {"Retry-After": "1"}) from None  # fmt: skip
        try:
            output = await predictor.batcher.submit(tensor)
        except Overloaded as exc:
            raise RequestError(503, "overloaded", f"{exc}; retry later", {"Retry-After": "1"}) from None
        return predictor.answer(output, k)

    async def predict(self, request, body: bytes) -> dict:
        k = _top_k(request, self.predictor)
        (name, data), *rest = await _uploads(request, body, 1)
        if rest:
            raise RequestError(400, "too_many_images", "/v1/predict takes one image; use /v1/predict/batch")
        return await self._classify(name, data, k)

    async def predict_batch(self, request, body: bytes) -> dict:
        """Every image's top-k, or its error: one bad image does not cost the others their
        answers (as in ``effnet predict``). All bad: the first error, as a 4xx."""
        options = self.predictor.options
        k = _top_k(request, self.predictor)
        uploads = await _uploads(request, body, options.max_images + 1)
        if len(uploads) > options.max_images:
            raise RequestError(413, "too_many_images", f"more than {options.max_images} images (--max-images)")

        async def one(name, data):
            try:
                return {"image": name, **await self._classify(name, data, k)}
            except RequestError as exc:
                if exc.status == 503:
                    raise
                self.predictor.metrics.errors.labels(exc.kind).inc()
                return {"image": name, "error": str(exc), "kind": exc.kind, "status": exc.status}

        results = await asyncio.gather(*(one(name, data) for name, data in uploads))
        failed = [r for r in results if "error" in r]
        if len(failed) == len(results):
            first = failed[0]
            raise RequestError(first["status"], first["kind"], first["error"])
        return {"results": results}

    async def healthz(self, request):
        from starlette.responses import JSONResponse

        if self.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready", "model": self.predictor.config.name})

    async def metrics(self, request):
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        return Response(self.predictor.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def model(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(self.predictor.describe())

    async def page(self, request):
        from starlette.responses import HTMLResponse

        return HTMLResponse(self.html)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one line saying why not (the port in use, an unknown host)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections made before the loop runs wait here instead of being refused
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: {host}:{port} is already in use") from None
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    return sock


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both or neither, and a certificate and key that load: one line saying why not, before the
    model is loaded (uvicorn would say it with a traceback once the server starts)."""
    if bool(certfile) != bool(keyfile):
        raise UsageError("--ssl-certfile and --ssl-keyfile go together: give both, or neither")
    if certfile:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
        except OSError as exc:  # ssl.SSLError is one
            reason = str(exc) if isinstance(exc, ssl.SSLError) or not exc.strerror else exc.strerror
            message = f"--ssl-certfile {certfile} --ssl-keyfile {keyfile}: cannot load them ({reason})"
            raise UsageError(message) from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def serve(
    weights: str, *, engine: str | None = None, host: str = "127.0.0.1", port: int = 8000,
    options: ServeOptions | None = None, log_level: str = "warning", ready=None, api_key: str | None = None,
    ssl_certfile: str | None = None, ssl_keyfile: str | None = None, **engine_options,
) -> int:  # fmt: skip
    """Load, warm up and serve until SIGTERM or Ctrl-C; then stop accepting, answer the requests
    in flight and return 0. ``ready(url)`` is called once the server accepts requests. With
    ``api_key`` the API wants it as a bearer token; with a certificate and key, HTTPS."""
    require("serve")
    import uvicorn

    from effnet.deploy.engines import engine_for, open_model

    options = options or ServeOptions()
    engine = engine_for(weights, engine)
    check_tls(ssl_certfile, ssl_keyfile)
    sock = bind(host, port)
    if not api_key and not is_loopback(sock.getsockname()[0]):
        print(f"effnet serve: warning: listening on {host}, beyond loopback, without an API key: anyone who can "
              "reach it can use the model (set EFFNET_API_KEY, and serve HTTPS with --ssl-certfile/--ssl-keyfile)",
              file=sys.stderr, flush=True)  # fmt: skip
    try:
        trained = open_model(weights, engine=engine, **engine_options)
        predictor = Predictor(trained, engine, options)
        predictor.warm_up()
    except BaseException:
        sock.close()
        raise
    server_app = Server(predictor, api_key=api_key)

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig, frame):
            server_app.draining = True  # healthz says so while the requests in flight finish
            super().handle_exit(sig, frame)

    config = uvicorn.Config(server_app.app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=30, ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile)  # fmt: skip
    bound_host, bound_port = sock.getsockname()[:2]
    scheme = "https" if ssl_certfile else "http"
    url = f"{scheme}://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
    server = _Uvicorn(config)

    async def main():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and ready:
            ready(url)
        await task

    # uvicorn re-raises the signal it shut down on, once it is done: handlers that do nothing
    # keep that from killing the process, so a graceful stop (SIGTERM or Ctrl-C) exits 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return 0


def print_ready(url: str) -> None:
    print(json.dumps({"url": url, "pid": os.getpid()}), flush=True)
    print(f"effnet serve: {url} (page at {url}/, metrics at {url}/metrics); Ctrl-C or SIGTERM stops it",
          file=sys.stderr, flush=True)  # fmt: skip
