"""A minimal SageMaker-contract container: the smallest thing `Protocol: sagemaker` can front.

`GET /ping` answers 200; `POST /invocations` answers a JSON object naming this container and echoing
the request. It listens on SAGEMAKER_BIND_TO_PORT (default 8080), as SageMaker asks of a container in a
multi-container endpoint. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    container = "echo"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/ping" else 404, b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/invocations":
            self._answer(404, b"")
            return
        try:
            request = json.loads(body or b"null")
        except ValueError:
            self._answer(400, b"expected a JSON body", "text/plain")
            return
        answer = {"container": self.container, "request": request}
        self._answer(200, json.dumps(answer).encode(), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    EchoHandler.container = sys.argv[1] if len(sys.argv) > 1 else "echo"
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    print(f"{EchoHandler.container} listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
