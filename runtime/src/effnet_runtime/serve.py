"""A small HTTP server on the standard library (no web framework on the device): the routes of
``effnet serve`` that a classifier on a board needs, with the same answers.

    GET  /healthz            {"status": "ready", "model": NAME}
    GET  /v1/model           name, engine, classes, preprocessing, input
    POST /v1/predict?top_k=K the image's bytes as the body -> {"top": [{"label", "index", "prob"}]}

Errors are JSON ``{"error", "kind"}`` with a 4xx status; a body over ``max_body_mb`` is refused
from its Content-Length before it is read.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from effnet_runtime.errors import RuntimeUsageError


def handler_for(model, max_body: int):
    class Handler(BaseHTTPRequestHandler):
        server_version = "effnet-runtime"

        def log_message(self, format, *args):  # one quiet line per request on stderr is noise on a board
            pass

        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            route = urlparse(self.path).path
            if route == "/healthz":
                return self.answer(200, {"status": "ready", "model": model.name})
            if route == "/v1/model":
                return self.answer(
                    200,
                    {
                        "model": model.name,
                        "engine": model.engine,
                        "classes": model.class_names,
                        "preprocessing": model.preprocessing,
                        "input": model.metadata["input"],
                    },
                )
            return self.answer(404, {"error": f"no route {route}", "kind": "not_found"})

        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/v1/predict":
                return self.answer(404, {"error": f"no route {url.path}", "kind": "not_found"})
            try:
                top_k = int(parse_qs(url.query).get("top_k", ["5"])[0])
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return self.answer(400, {"error": "top_k and Content-Length must be integers", "kind": "bad_request"})
            if length > max_body:
                self.close_connection = True
                return self.answer(413, {"error": f"body of {length} bytes is over {max_body}", "kind": "too_large"})
            if length <= 0 or top_k < 1:
                return self.answer(400, {"error": "send an image as the body (top_k >= 1)", "kind": "empty_body"})
            body = self.rfile.read(length)
            try:
                return self.answer(200, model.predict([body], top_k=top_k)[0])
            except RuntimeUsageError as exc:
                return self.answer(400, {"error": str(exc), "kind": "bad_image"})

    return Handler


def serve(model, host: str, port: int, *, max_body_mb: float = 20.0) -> None:
    try:
        server = ThreadingHTTPServer((host, port), handler_for(model, int(max_body_mb * 1e6)))
    except OSError as exc:
        raise RuntimeUsageError(f"--host {host} --port {port}: cannot listen ({exc.strerror})") from None
    print(f"effnet-runtime: serving {model.name} ({model.engine}) on http://{host}:{server.server_port}",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
