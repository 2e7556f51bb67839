"""A SageMaker-contract test container: a real HTTP/1.1 server (`GET /ping`, `POST /invocations`).

Started as its own process by the tests (`python contract_server.py --name NAME --port 0`); it prints
`listening on PORT` once it accepts connections. Standard library only, so it is a container the
gateway knows nothing about.

Normal answer: a JSON request object comes back with this container appended to `trail` and what it
received recorded under `seen[NAME]` (headers, body size), so a chain of these is a real pipeline. A
non-JSON body is echoed with its Content-Type. The request steers faults per container with
`"faults": {NAME: {...}}`:

    {"status": 500, "message": "boom"}   answer that status and message
    {"hang": true}                       never answer
    {"delay": S}                         answer normally after S seconds (a slow model)
    {"reset": true}                      reset the connection (RST)
    {"exit": 3}                          the process exits mid-request
    {"garbage": true}                    answer bytes that are not HTTP
    {"size": N}                          answer N bytes (application/octet-stream)
    {"size": N, "chunked": true}         the same, chunked
    {"size": N, "cut_at": M}             declare N bytes, send M, close
    {"content_type": "text/csv"}         answer the normal JSON under this Content-Type
    {"attributes": "a=1"}                set X-Amzn-SageMaker-Custom-Attributes on the answer
    {"drop_next": true}                  answer, keep the connection open, then close it on the next
                                         request without answering (it read the request, then died)
    {"close_idle": true}                 answer, then close the kept-alive connection at once (a
                                         container whose keep-alive timeout ran out)

`GET /count` answers how many POST requests it has read (a request reaching it twice shows there);
`GET /stats`, the same as a Prometheus counter.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEVER = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this, Nagle and delayed ACKs add 40 ms
    disable_nagle_algorithm = True
    server: ContractServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/count":
            self._send(200, str(self.server.posts).encode(), "text/plain")
            return
        if self.path == "/stats":  # the same count as Prometheus text
            text = f"# TYPE contract_posts_total counter\ncontract_posts_total {self.server.posts}\n"
            self._send(200, text.encode(), "text/plain; version=0.0.4")
            return
        if self.path != "/ping":
            self._send(404, b"not found", "text/plain")
            return
        self._send(self.server.ping_status, b"", None)

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.posts += 1
        if getattr(self, "drop_next", False):
            self.close_connection = True  # closed without a byte of answer
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/invocations":
            self._send(404, b"not found", "text/plain")
            return
        name = self.server.name
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self._send(200, body, self.headers.get("Content-Type"))
            return
        fault = doc.get("faults", {}).get(name, {})
        if "delay" in fault:
            NEVER.wait(float(fault["delay"]))
        if self._fault(fault):
            return
        doc.setdefault("trail", []).append(name)
        doc.setdefault("seen", {})[name] = {"headers": dict(self.headers.items()), "body_bytes": len(body)}
        extra = {}
        if "attributes" in fault:
            extra["X-Amzn-SageMaker-Custom-Attributes"] = fault["attributes"]
        self._send(200, json.dumps(doc).encode(), fault.get("content_type", "application/json"), extra)
        if getattr(self, "close_idle", False):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def _fault(self, fault: dict[str, object]) -> bool:
        if "status" in fault:
            self._send(int(str(fault["status"])), str(fault.get("message", "")).encode(), "text/plain")
        elif fault.get("hang"):
            NEVER.wait()
        elif fault.get("reset"):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif "exit" in fault:
            os._exit(int(str(fault["exit"])))
        elif fault.get("garbage"):
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif fault.get("drop_next"):
            self.drop_next = True
            return False
        elif fault.get("close_idle"):
            self.close_idle = True
            return False
        elif "size" in fault:
            self._send_size(int(str(fault["size"])), bool(fault.get("chunked")), fault.get("cut_at"))
        else:
            return False
        return True

    def _send_size(self, size: int, chunked: bool, cut_at: object) -> None:
        payload = b"x" * size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, size, 65536):
                piece = payload[start : start + 65536]
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if cut_at is not None:
            self.wfile.write(payload[: int(str(cut_at))])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(payload)

    def _send(
        self, status: int, body: bytes, content_type: str | None, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ContractServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # socketserver's 5 drops bursts of new connections into TCP retransmits

    def __init__(self, port: int, name: str, ping_status: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.name = name
        self.ping_status = ping_status
        self.posts = 0
        self.lock = threading.Lock()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping-status", type=int, default=200)
    args = parser.parse_args()
    server = ContractServer(args.port, args.name, args.ping_status)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
