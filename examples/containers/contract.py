"""The SageMaker container contract in a few lines, for the example containers (standard library only).

`serve(transform)` answers `GET /ping` with 200 and `POST /invocations` with `transform(body, content_type)`,
on SAGEMAKER_BIND_TO_PORT (default 8080), as SageMaker asks of a container in a multi-container endpoint.
A transform raises `BadRequest` for input it cannot take (answered 400 with the message). `GET /metrics`
counts the invocations in Prometheus' text format, where SageMaker's detailed observability (and mce's
/metrics) looks for a container's own metrics.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Transform = Callable[[bytes, str], tuple[bytes, str]]


class BadRequest(Exception):
    pass


def serve(name: str, transform: Transform) -> None:
    counts: Counter[str] = Counter()
    counting = threading.Lock()

    def metrics() -> bytes:
        with counting:
            lines = [
                f'example_invocations_total{{container="{name}",outcome="{outcome}"}} {counts[outcome]}'
                for outcome in ("ok", "bad_request")
            ]
        return (
            "# HELP example_invocations_total Invocations this container answered, by outcome.\n"
            "# TYPE example_invocations_total counter\n" + "\n".join(lines) + "\n"
        ).encode()

    def count(outcome: str) -> None:
        with counting:
            counts[outcome] += 1

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: without this, Nagle and delayed ACKs add 40 ms
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics(), "text/plain; version=0.0.4")
                return
            self._answer(200 if self.path == "/ping" else 404, b"", "text/plain")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/invocations":
                self._answer(404, b"", "text/plain")
                return
            try:
                answer, content_type = transform(body, self.headers.get("Content-Type", ""))
            except BadRequest as error:
                count("bad_request")
                self._answer(400, str(error).encode(), "text/plain")
                return
            count("ok")
            self._answer(200, answer, content_type)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    host = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    server = ThreadingHTTPServer((host, int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), Handler)
    server.daemon_threads = True
    print(f"{name} listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
