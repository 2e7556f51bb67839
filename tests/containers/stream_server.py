"""A streaming SageMaker container for the tests: `POST /invocations` answers JSON lines in HTTP chunks,
one `{"token": i}` line per chunk, as SageMaker's LLM containers stream (spec §1.5). The request body says
how (JSON, every key optional):

    {"tokens": 3}                 how many lines (default 3)
    {"gate": "/path"}             after the first line, wait until that file exists, then go on
    {"break_after": 2}            after that many lines, close the connection mid-answer
    {"stall_after": 1}            after that many lines, send nothing more (until the client leaves)
    {"error": 503}                answer that status and a message instead, before any line
    {"session": "echo"}           answer with the request's session headers in the first line
    {"bulk": N}                   after the lines, N bytes of filler in 64 KiB chunks; `GET /progress`
                                  answers how many bytes of it have been written so far

A response to a request with `X-Amzn-SageMaker-Session-Id: NEW_SESSION` carries
`X-Amzn-SageMaker-New-Session-Id: sess-1; Expires=...`; one with `"close": true` in its body carries
`X-Amzn-SageMaker-Closed-Session-Id: <the id>`. Listens on SAGEMAKER_BIND_TO_PORT (or an OS-chosen port,
printed as `listening on PORT`). Standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROGRESS = [0]  # bytes of the latest bulk answer written so far


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = str(PROGRESS[0]).encode() if self.path == "/progress" else b""
        self.send_response(200 if self.path in ("/ping", "/progress") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if "error" in request:
            body = b"the model refused: " + str(request["error"]).encode()
            self.send_response(int(request["error"]))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        session = self.headers.get("X-Amzn-SageMaker-Session-Id")
        self.send_response(200)
        self.send_header("Content-Type", "application/jsonlines")
        self.send_header("Transfer-Encoding", "chunked")
        if session == "NEW_SESSION":
            self.send_header("X-Amzn-SageMaker-New-Session-Id", "sess-1; Expires=2030-01-01T00:00:00Z")
        elif session is not None and request.get("close"):
            self.send_header("X-Amzn-SageMaker-Closed-Session-Id", session)
        self.end_headers()
        for index in range(int(request.get("tokens", 3))):
            line: dict[str, object] = {"token": index}
            if index == 0 and "session" in request:
                line["session"] = session
                line["accept"] = self.headers.get("Accept")
            self._chunk(json.dumps(line).encode() + b"\n")
            if index == request.get("break_after", -1) - 1:
                self.connection.shutdown(socket.SHUT_RDWR)  # the answer ends mid-stream
                return
            if index == request.get("stall_after", -1) - 1:
                while self._client_waits():
                    time.sleep(0.05)
                return
            if index == 0 and "gate" in request:
                while not Path(request["gate"]).exists():
                    time.sleep(0.01)
        PROGRESS[0] = 0
        filler = b"x" * 65536
        for _ in range(int(request.get("bulk", 0)) // len(filler)):
            self._chunk(filler)  # blocks while the gateway does not read: that is the point
            PROGRESS[0] += len(filler)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_waits(self) -> bool:
        """Until the gateway closes the connection (a stalled stream it gave up on)."""
        self.connection.setblocking(False)
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked != b""
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.connection.setblocking(True)


if __name__ == "__main__":
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", sys.argv[1] if len(sys.argv) > 1 else "0"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"stream server listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
