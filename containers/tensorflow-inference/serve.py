"""SageMaker's TensorFlow inference container (the `tensorflow-inference` Deep Learning Container), natively:
TF Serving (`tensorflow_model_server` when on PATH, else containers/tensorflow/standin.py) behind a front end
that does what the container's own front end is documented to do, so a `model.tar.gz` made for that
container serves unchanged. Our own code, written from the container's documented behaviour (D32).

Models: every `saved_model.pb` in a numeric version folder under the model data is a SavedModel; its
model is the folder above the versions (`1/` at the root is the model `model`, `<name>/1/` is `<name>`).
The default model is SAGEMAKER_TFS_DEFAULT_MODEL_NAME, else the first name in sorted order. Each model
gets a TF Serving of its own on two ports of SAGEMAKER_SAFE_PORT_RANGE (gRPC low+2i, REST low+2i+1); the
front end listens on SAGEMAKER_BIND_TO_PORT.

    GET  /ping          200 once every model is AVAILABLE in TF Serving, 502 before
    POST /invocations   X-Amzn-SageMaker-Custom-Attributes tfs-model-name=, tfs-model-version=,
                        tfs-method=predict|classify|regress pick the TF Serving call (defaults: the default
                        model, its latest version, predict)

Without code/inference.py, the body is converted as that container documents it and passed to TF Serving's
REST API, whose status and body come back:
    application/json, application/jsonlines, application/jsons
        a body naming "instances", "inputs" or "examples" is passed as it is; several JSON values, one a
        line, are the instances {"instances": [line, ...]}; else a list of lists is the instances and
        any other value one instance
    text/csv
        each line an instance; a field that is a JSON number is that number, any other a string; a line
        of one field is a scalar instance
    anything else: 415 {"error": "Unsupported Media Type: ..."}
With code/inference.py (or MCE_CODE_DIR, where the launcher put an s3:// SAGEMAKER_SUBMIT_DIRECTORY):
`handler(data, context)`, else `input_handler(data, context)` and `output_handler(response, context)`
(a `requests.Response`), each returning `(body, content_type)` as the container's contract has it; an
exception in them is 500 {"error": "<message>"}; code/lib is on the import path; code/requirements.txt is
honoured when installed, else refused. The image's tag (MCE_IMAGE) is checked against the installed
TensorFlow as containers/pytorch-inference does for PyTorch.

Limits: bodies up to MAX_BODY bytes (413 beyond); TF Serving has TFS_TIMEOUT seconds per call (504 beyond);
start-up waits up to SAGEMAKER_TFS_WAIT_TIME_SECONDS (default 300) for the models.

    python containers/tensorflow-inference/serve.py     (MCE_MODEL_DIR, MCE_BIND_ADDRESS, MCE_PYTHON)
"""

from __future__ import annotations

import collections
import http.client
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import dlc  # noqa: E402  (containers/dlc.py: what the framework containers share)

STANDIN = HERE.parent / "tensorflow" / "standin.py"
MAX_BODY = 100 * 1024 * 1024  # the container's nginx buffers 100 MB of request body
TFS_TIMEOUT = 60.0  # seconds for one TF Serving call
GRACE = 20.0  # seconds TF Serving has to stop on SIGTERM
JSON_TYPES = ("application/json", "application/jsonlines", "application/jsons")
_NAMED = re.compile(r'"(instances|inputs|examples)"\s*:')
_SEVERAL = re.compile(r"[}\]]\s*[\[{]")
_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_ATTRIBUTE = re.compile(r"tfs-[a-z\-]+=[^,]+")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

Context = collections.namedtuple(
    "Context",
    "model_name model_version method rest_uri grpc_port channel custom_attributes "
    "request_content_type accept_header content_length",
)


class Refusal(Exception):
    """An answer other than TF Serving's: its status and the container's {"error": ...} body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def find_models(model_dir: Path) -> dict[str, Path]:
    """Model name -> base path (the folder holding its version folders), sorted by name."""
    found: dict[str, Path] = {}
    for saved in sorted(model_dir.rglob("saved_model.pb")):
        version = saved.parent
        if not version.name.isdigit():
            continue
        base = version.parent
        name = "model" if base == model_dir else base.name
        found.setdefault(name, base)
    return dict(sorted(found.items()))


def json_instances(text: str) -> str:
    """A JSON, JSON lines or "simplified JSON" body as TF Serving's REST request."""
    if _NAMED.search(text):
        return text
    if _SEVERAL.search(text):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return '{"instances":' + (f"[{','.join(lines)}]" if len(lines) > 1 else lines[0]) + "}"
    stripped = text.strip()
    return '{"instances":' + (stripped if stripped.startswith("[[") else f"[{stripped}]") + "}"


def csv_instances(text: str) -> str:
    """CSV, a line per instance, as TF Serving's REST request."""
    import csv

    rows = []
    for fields in csv.reader(line for line in text.strip().splitlines() if line.strip()):
        values = [f.strip() if _NUMBER.match(f.strip()) else json.dumps(f) for f in fields]
        rows.append(values[0] if len(values) == 1 else f"[{','.join(values)}]")
    return '{"instances":[' + ",".join(rows) + "]}"


def custom_attributes(header: str | None) -> dict[str, str]:
    """The tfs-* attributes of X-Amzn-SageMaker-Custom-Attributes, checked."""
    attributes = {}
    for pair in _ATTRIBUTE.findall(header or ""):
        key, _, value = pair.partition("=")
        attributes[key] = value.strip()
    name = attributes.get("tfs-model-name")
    if name is not None and not _MODEL_NAME.match(name):
        raise Refusal(400, "invalid tfs-model-name")
    version = attributes.get("tfs-model-version")
    if version is not None and not version.isdigit():
        raise Refusal(400, "invalid tfs-model-version")
    if attributes.get("tfs-method", "predict") not in ("predict", "classify", "regress"):
        raise Refusal(400, "invalid tfs-method")
    return attributes


class Serving:
    """One TF Serving per model, and what the front end needs to call them."""

    def __init__(self, models: dict[str, Path], default: str, low: int, address: str) -> None:
        self.models = models
        self.default = default
        self.ports = {name: (low + 2 * i, low + 2 * i + 1) for i, name in enumerate(models)}  # (gRPC, REST)
        self.address = address
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ready = threading.Event()

    def start(self) -> None:
        binary = shutil.which("tensorflow_model_server")
        python = os.environ.get("MCE_PYTHON") or sys.executable
        for name, base in self.models.items():
            grpc, rest = self.ports[name]
            if binary:
                argv = [binary, f"--port={grpc}", f"--rest_api_port={rest}", f"--model_name={name}"]
                argv.append(f"--model_base_path={base}")
            else:
                argv = [python, str(STANDIN), "--model-name", name, "--model-base-path", str(base)]
                argv += ["--rest-port", str(rest), "--grpc-port", str(grpc), "--host", self.address]
            self.processes.append(subprocess.Popen(argv))

    def wait_available(self, deadline: float) -> str | None:
        """None once every model is AVAILABLE; else why not (a TF Serving exited, or time ran out)."""
        waiting = set(self.models)
        while waiting:
            for process in self.processes:
                if process.poll() is not None:
                    return f"TF Serving exited with status {process.returncode} (its output is above)"
            for name in sorted(waiting):
                status, body = self.call(
                    "GET", self.rest_path(name, None, None).rsplit(":", 1)[0], None, name
                )
                if status == 200 and b'"AVAILABLE"' in body:
                    waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                return f"models {sorted(waiting)} not AVAILABLE in time (SAGEMAKER_TFS_WAIT_TIME_SECONDS)"
            if waiting:
                time.sleep(0.2)
        self.ready.set()
        return None

    def rest_path(self, name: str, version: str | None, method: str | None) -> str:
        versioned = f"/versions/{version}" if version else ""
        return f"/v1/models/{name}{versioned}:{method or 'predict'}"

    def rest_port(self, name: str) -> int:
        return self.ports.get(name, self.ports[self.default])[1]  # an unknown model: TF Serving says so

    _local = threading.local()

    def call(self, method: str, path: str, body: bytes | None, model: str) -> tuple[int, bytes]:
        """One TF Serving REST call on this thread's kept-alive connection; (599, reason) if it fails."""
        port = self.rest_port(model)
        connections: dict[int, http.client.HTTPConnection] = self._local.__dict__.setdefault("c", {})
        for attempt in (1, 2):  # a kept-alive connection TF Serving closed is retried once
            connection = connections.get(port)
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TFS_TIMEOUT)
                    connection.connect()
                    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see FrontEnd
                    connections[port] = connection
                headers = {"Content-Type": "application/json"} if body is not None else {}
                connection.request(method, path, body=body, headers=headers)
                answer = connection.getresponse()
                return answer.status, answer.read()
            except TimeoutError:
                if connection is not None:
                    connection.close()
                connections.pop(port, None)
                raise Refusal(504, f"TF Serving did not answer within {TFS_TIMEOUT:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                if connection is not None:
                    connection.close()
                connections.pop(port, None)
                if attempt == 2:
                    return 599, str(exc).encode()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + GRACE
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def load_handlers(code: Path) -> tuple[Any, Any, Any] | None:
    """(handler, input_handler, output_handler) from code/inference.py, or None without one. Raises what
    importing it raises."""
    script = code / "inference.py"
    if not script.is_file():
        return None
    for folder in (code / "lib", code):
        if folder.is_dir():
            sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("inference", script)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules["inference"] = module
    spec.loader.exec_module(module)
    handler = getattr(module, "handler", None)
    pair = getattr(module, "input_handler", None), getattr(module, "output_handler", None)
    if handler is None and None in pair:
        raise NotImplementedError("Handlers are not implemented correctly in user script.")
    return handler, *pair


def front_end(serving: Serving, handlers: tuple[Any, Any, Any] | None) -> type[BaseHTTPRequestHandler]:
    session_local = threading.local()

    def session() -> Any:
        import requests  # what output_handler is given: a requests.Response, as in the container

        if not hasattr(session_local, "session"):
            session_local.session = requests.Session()
        return session_local.session

    class FrontEnd(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's pooled connections expect

        def setup(self) -> None:
            # headers and body are separate writes: without TCP_NODELAY, Nagle's algorithm holds the body
            # until the peer's delayed ACK, 40 ms a request
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the container's nginx logs errors only

        def do_GET(self) -> None:
            if self.path != "/ping":
                self.reply(404, b'{"error": "Not Found"}')
            elif serving.ready.is_set():
                self.reply(200, b"")
            else:
                self.reply(502, b'{"error": "the models are loading"}')

        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length") or "0"
            if not declared.isascii() or not declared.isdigit():
                self.close_connection = True  # where the body ends is unknown: the connection is done
                self.reply(400, _error(f"Content-Length {declared!r} is not a number of bytes"))
                return
            length = int(declared)
            if length > MAX_BODY:
                self.close_connection = True
                self.reply(413, json.dumps({"error": f"the body is over {MAX_BODY} bytes"}).encode())
                return
            body = self.rfile.read(length)
            if self.path != "/invocations":
                self.reply(404, b'{"error": "Not Found"}')
                return
            try:
                status, answer, content_type = self.invoke(body)
            except Refusal as refusal:
                status, answer, content_type = refusal.status, _error(str(refusal)), "application/json"
            except Exception as exc:  # the user's handlers: the container answers 500 with the message
                traceback.print_exc()
                status, answer, content_type = 500, _error(str(exc)), "application/json"
            self.reply(status, answer, content_type)

        def invoke(self, body: bytes) -> tuple[int, bytes, str]:
            raw_attributes = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
            attributes = custom_attributes(raw_attributes)
            name = attributes.get("tfs-model-name") or serving.default
            version, method = attributes.get("tfs-model-version"), attributes.get("tfs-method")
            path = serving.rest_path(name, version, method)
            content_type = self.headers.get("Content-Type") or "application/json"
            accept = self.headers.get("Accept") or "application/json"
            if handlers is not None:
                context = Context(
                    attributes.get("tfs-model-name"),
                    version,
                    method,
                    f"http://127.0.0.1:{serving.rest_port(name)}{path}",
                    str(serving.ports.get(name, serving.ports[serving.default])[0]),
                    None,
                    raw_attributes,
                    content_type,
                    accept,
                    len(body),
                )
                return self.run_handlers(body, context)
            kind = content_type.split(";", 1)[0].strip().lower()
            if kind in JSON_TYPES:
                request = json_instances(body.decode("utf-8", "replace"))
            elif kind == "text/csv":
                request = csv_instances(body.decode("utf-8", "replace"))
            else:
                raise Refusal(415, f"Unsupported Media Type: {content_type or 'Unknown'}")
            status, answer = serving.call("POST", path, request.encode(), name)
            if status == 599:
                raise Refusal(502, f"TF Serving cannot be reached: {answer.decode()}")
            if any(
                a.strip().split(";")[0] in ("application/json", "application/jsonlines")
                for a in accept.split(",")
            ):
                answer = answer.replace(b"\n", b"")
            return status, answer, "application/json"

        def run_handlers(self, body: bytes, context: Context) -> tuple[int, bytes, str]:
            assert handlers is not None
            handler, input_handler, output_handler = handlers
            if handler is not None:
                result = handler(io.BytesIO(body), context)
            else:
                request = input_handler(io.BytesIO(body), context)
                response = session().post(context.rest_uri, data=request, timeout=TFS_TIMEOUT)
                if response.status_code != 200:  # TF Serving's own refusal, before output_handler
                    return response.status_code, response.content, "application/json"
                result = output_handler(response, context)
            answer, answer_type = result  # the contract: (body, content type)
            return 200, answer.encode() if isinstance(answer, str) else bytes(answer), str(answer_type)

        def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return FrontEnd


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def main() -> int:
    model_dir = Path(os.environ.get("MCE_MODEL_DIR", "/opt/ml/model")).resolve()
    address = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    reason = dlc.check_image(os.environ.get("MCE_IMAGE", ""), "TensorFlow", "tensorflow-cpu", "tensorflow")
    if reason is not None:
        print(f"serve.py: {reason}", file=sys.stderr)
        return 2
    models = find_models(model_dir) if model_dir.is_dir() else {}
    if not models:
        print(
            f"serve.py: no SavedModel bundles found in {model_dir}: the container wants "
            "<version>/saved_model.pb or <model>/<version>/saved_model.pb (a numeric version folder)",
            file=sys.stderr,
        )
        return 2
    default = os.environ.get("SAGEMAKER_TFS_DEFAULT_MODEL_NAME", "None")
    if default == "None":
        default = next(iter(models))
    elif default not in models:
        print(
            f"serve.py: SAGEMAKER_TFS_DEFAULT_MODEL_NAME={default} is not one of the models found in "
            f"{model_dir}: {', '.join(models)}",
            file=sys.stderr,
        )
        return 2
    code = dlc.code_folder(model_dir)
    refusal = dlc.requirements_refusal(code)
    if refusal is not None:
        print(f"serve.py: {refusal}", file=sys.stderr)
        return 2
    try:
        handlers = load_handlers(code)
    except Exception:
        print(f"serve.py: {code / 'inference.py'} cannot be loaded:", file=sys.stderr)
        traceback.print_exc()
        return 2
    bind = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    low, high = (int(p) for p in os.environ.get("SAGEMAKER_SAFE_PORT_RANGE", "9000-9999").split("-", 1))
    if low + 2 * len(models) - 1 > high:
        print(
            f"serve.py: SAGEMAKER_SAFE_PORT_RANGE {low}-{high} has too few ports for {len(models)} models",
            file=sys.stderr,
        )
        return 2
    serving = Serving(models, default, low, address)
    server = ThreadingHTTPServer((address, bind), front_end(serving, handlers))
    server.daemon_threads = True
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serving.start()
    print(f"serve.py: models {', '.join(models)} (default {default}) on {address}:{bind}", flush=True)
    failed: list[str] = []

    def watch() -> None:
        wait = float(os.environ.get("SAGEMAKER_TFS_WAIT_TIME_SECONDS", "300"))
        why = serving.wait_available(time.monotonic() + wait)
        while why is None and not stopping.is_set():  # then: a TF Serving that exits ends the container
            for process in serving.processes:
                if process.poll() is not None:
                    why = f"TF Serving exited with status {process.returncode}"
            stopping.wait(0.5)
        if why is not None:
            failed.append(why)
            stop(signal.SIGTERM, None)

    threading.Thread(target=watch, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        serving.stop()
    if failed:
        print(f"serve.py: {failed[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
