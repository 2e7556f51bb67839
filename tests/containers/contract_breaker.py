"""A container that breaks one rule of the SageMaker serving contract, for `mce check`'s tests.

    python contract_breaker.py MODE       (natively)
    docker run -e BREAKER_MODE=MODE IMAGE serve   (as SageMaker runs an image: tests/test_check.py)

A real HTTP/1.1 server (standard library only) that honours the contract except where MODE says:

    good             nothing broken
    wrong-port       listens on $BREAKER_PORT, not SAGEMAKER_BIND_TO_PORT
    exits            prints why and exits with code 3 before serving
    ping-503         GET /ping answers 503, always
    invoke-500       POST /invocations answers 500
    invoke-hangs     POST /invocations never answers
    extra-port       also listens on a port the OS chooses (outside SAGEMAKER_SAFE_PORT_RANGE)
    serial           one request at a time, each /invocations taking 0.6 s (a ping waits behind them)
    ignores-sigterm  SIGTERM does nothing
    mm-no-409        a multi-model container that loads a loaded model again (200, not 409)
    mm-unknown-500   a multi-model container that answers 500 for a model it has not loaded (not 404)

Every multi-model mode (and `good` with SAGEMAKER_MULTI_MODEL=true) serves the multi-model API: load,
list, get, invoke, unload.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

MODE = os.environ.get("BREAKER_MODE") or sys.argv[1]
HOST = os.environ.get("BREAKER_HOST", "127.0.0.1")  # 0.0.0.0 in an image: its port is published
loaded: dict[str, str] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ping":
            self.answer(503 if MODE == "ping-503" else 200, b"")
        elif self.path == "/models":
            listed = [{"modelName": name, "modelUrl": url} for name, url in sorted(loaded.items())]
            self.answer(200, json.dumps({"models": listed}).encode())
        elif self.path.startswith("/models/"):
            name = self.path.split("/")[2]
            if name in loaded:
                self.answer(200, json.dumps({"modelName": name, "modelUrl": loaded[name]}).encode())
            else:
                self.answer(404, b'{"error": "not loaded"}')
        else:
            self.answer(404, b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/invocations":
            if MODE == "invoke-500":
                self.answer(500, b'{"error": "the model fell over"}')
            elif MODE == "invoke-hangs":
                threading.Event().wait()
            else:
                if MODE == "serial":
                    time.sleep(0.6)
                self.answer(200, body)
        elif self.path == "/models":
            request = json.loads(body)
            name = request["model_name"]
            if name in loaded and MODE != "mm-no-409":
                self.answer(409, b'{"error": "already loaded"}')
            else:
                loaded[name] = request["url"]
                self.answer(200, b'{"status": "loaded"}')
        elif self.path.startswith("/models/") and self.path.endswith("/invoke"):
            name = self.path.split("/")[2]
            if name in loaded:
                self.answer(200, body)
            else:
                self.answer(500 if MODE == "mm-unknown-500" else 404, b'{"error": "not loaded"}')
        else:
            self.answer(404, b"")

    def do_DELETE(self) -> None:
        name = self.path.split("/")[2] if self.path.startswith("/models/") else ""
        if loaded.pop(name, None) is None:
            self.answer(404, b'{"error": "not loaded"}')
        else:
            self.answer(200, b'{"status": "unloaded"}')

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    if MODE == "exits":
        print("cannot find /opt/ml/model/weights.bin", flush=True)
        sys.exit(3)
    if MODE == "ignores-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:  # as PID 1 in a container, SIGTERM's default action is not taken: say what it does
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(os.environ["BREAKER_PORT" if MODE == "wrong-port" else "SAGEMAKER_BIND_TO_PORT"])
    server_class = HTTPServer if MODE == "serial" else ThreadingHTTPServer
    server = server_class((HOST, port), Handler)
    if MODE == "extra-port":
        extra = socket.socket()
        extra.bind(("127.0.0.1", 0))
        extra.listen()
        print(f"also listening on {extra.getsockname()[1]}", flush=True)
    print(f"{MODE} listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
