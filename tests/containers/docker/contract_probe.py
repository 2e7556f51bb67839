"""A container as SageMaker runs one (`docker run <image> serve`), for the Docker runtime's tests: it
serves the contract on SAGEMAKER_BIND_TO_PORT (8080 when unset) on every interface of its own network,
and answers each invocation with what it was given: its arguments, hostname, environment (SageMaker's
variables and the test's), the text of /opt/ml/model/answer.txt and whether that folder is writable.
A `POST /invocations` with body `exit` makes it exit 7 (a container that dies). Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL = Path("/opt/ml/model")


def seen() -> dict[str, object]:
    answer = MODEL / "answer.txt"
    return {
        "argv": sys.argv[1:],
        "hostname": socket.gethostname(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("SAGEMAKER_", "PROBE_"))},
        "answer": answer.read_text() if answer.exists() else None,
        "model_writable": MODEL.exists() and os.access(MODEL, os.W_OK),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200 if self.path == "/ping" else 404, b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if body == b"exit":
            print("asked to exit", flush=True)
            os._exit(7)
        self._send(200, json.dumps(seen()).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    # PID 1 in a container ignores SIGTERM unless it handles it: SageMaker stops a container with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    print(f"probe serving on {port} with arguments {sys.argv[1:]}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
