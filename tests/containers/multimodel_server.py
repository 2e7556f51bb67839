"""A multi-model test container: SageMaker's multi-model API (spec §4.1) as a real HTTP/1.1 server.

Started by the tests (`python multimodel_server.py --port 0 [--capacity N]`); prints `listening on PORT`.
Standard library only. It loads a model by reading the folder it is given, and answers an invocation
with what it knows of the model, so tests can see which artifact was loaded under which name:

    POST /models {"model_name", "url"}   200; 409 if loaded; 404 if `url` is not a folder;
                                         507 when `--capacity` models are loaded already
    GET /models, GET /models/{name}      the list, one model (404 if not loaded)
    DELETE /models/{name}                200, 404 if not loaded
    POST /models/{name}/invoke           {"model": name, "target": X-Amzn-SageMaker-Target-Model,
                                         "files": {file: text}, "request": body}; 404 if not loaded
    GET /stats                           {"loads": {name: n}, "unloads": {name: n}}

A model folder steers faults with a `load.json`: {"seconds": S} loads take S seconds; {"status": N}
the load answers N; and with an `invoke.json`: {"status_once": N} its first invocation answers N.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: ModelServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        s = self.server
        if self.path == "/ping":
            self._json(200, {"status": "Healthy"})
        elif self.path == "/stats":
            with s.lock:
                self._json(200, {"loads": s.loads, "unloads": s.unloads})
        elif self.path.split("?")[0] == "/models":
            with s.lock:
                self._json(
                    200, {"models": [{"modelName": n, "modelUrl": u} for n, u in sorted(s.models.items())]}
                )
        elif self.path.startswith("/models/"):
            name = self.path[len("/models/") :]
            with s.lock:
                url = s.models.get(name)
            if url is None:
                self._json(
                    404,
                    {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found: {name}"},
                )
            else:
                self._json(200, [{"modelName": name, "modelUrl": url}])
        else:
            self._json(404, {"message": "not found"})

    def do_DELETE(self) -> None:
        self._body()
        name = self.path[len("/models/") :]
        s = self.server
        with s.lock:
            if s.models.pop(name, None) is None:
                self._json(
                    404,
                    {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found: {name}"},
                )
                return
            s.unloads[name] = s.unloads.get(name, 0) + 1
        self._json(200, {"status": f'Model "{name}" unregistered'})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/models":
            self._load(json.loads(body))
        elif self.path.startswith("/models/") and self.path.endswith("/invoke"):
            self._invoke(self.path[len("/models/") : -len("/invoke")], body)
        else:
            self._json(404, {"message": "not found"})

    def _load(self, request: dict[str, str]) -> None:
        s = self.server
        name, url = request["model_name"], request["url"]
        folder = Path(url)
        if not folder.is_dir():
            self._json(
                404, {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found at {url}"}
            )
            return
        steer = json.loads((folder / "load.json").read_text()) if (folder / "load.json").exists() else {}
        if "status" in steer:
            self._json(int(steer["status"]), {"code": steer["status"], "message": "load failed (load.json)"})
            return
        time.sleep(float(steer.get("seconds", 0)))  # a slow load, as the model asks
        with s.lock:
            if name in s.models:
                self._json(
                    409,
                    {
                        "code": 409,
                        "type": "ConflictStatusException",
                        "message": f"Model {name} is already registered.",
                    },
                )
                return
            if s.capacity is not None and len(s.models) >= s.capacity:
                self._json(
                    507,
                    {"code": 507, "type": "ServiceUnavailableException", "message": "System out of memory"},
                )
                return
            s.models[name] = url
            s.loads[name] = s.loads.get(name, 0) + 1
        self._json(200, {"status": f'Model "{name}" registered'})

    def _invoke(self, name: str, body: bytes) -> None:
        s = self.server
        with s.lock:
            url = s.models.get(name)
        if url is None:
            self._json(
                404, {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found: {name}"}
            )
            return
        steer = Path(url) / "invoke.json"
        if steer.exists():
            with s.lock:
                first = name not in s.invoked
                s.invoked.add(name)
            if first:
                status = int(json.loads(steer.read_text())["status_once"])
                self._json(
                    status,
                    {"code": status, "type": "ServiceUnavailableException", "message": "Out of resources"},
                )
                return
        files = {p.name: p.read_text() for p in sorted(Path(url).iterdir()) if p.is_file()}
        self._json(
            200,
            {
                "model": name,
                "target": self.headers.get("X-Amzn-SageMaker-Target-Model"),
                "files": files,
                "request": body.decode("utf-8", "replace"),
            },
        )

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _json(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, capacity: int | None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.capacity = capacity
        self.lock = threading.Lock()
        self.models: dict[str, str] = {}
        self.loads: dict[str, int] = {}
        self.unloads: dict[str, int] = {}
        self.invoked: set[str] = set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capacity", type=int, help="models it can hold; one more is a 507")
    args = parser.parse_args()
    server = ModelServer(args.port, args.capacity)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
