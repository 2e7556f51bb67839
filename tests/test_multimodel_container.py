"""The multi-model container, for real: serve.py runs Multi Model Server on 127.0.0.1, on a free port below
32767.

Covers the SageMaker multi-model container API (spec section 4.1) as MMS 1.1.11 serves it with our handler:
load, invoke (checked against a numpy reference computed from the artifact's own model.npz), list,
describe, unload, the status codes for duplicates, unknown models, bad payloads and a full server, and a
stop that leaves no java or python worker behind. Readiness is polled with a deadline; nothing sleeps to
synchronise. Only the standard library, psutil and numpy on the test side.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from gateway.launch.ports import allocate

CONTAINER = Path(__file__).resolve().parent.parent / "containers" / "multi-model"
READY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
WORKER = "model_service_worker"


@dataclass
class Server:
    """serve.py started by a test, and the port it was told to bind."""

    popen: subprocess.Popen[bytes]
    port: int

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def load(self, name: str, url: Path) -> tuple[int, dict[str, Any]]:
        status, body = self.request("POST", "/models", {"model_name": name, "url": str(url)})
        return status, json.loads(body)

    def invoke(self, name: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        status, answer = self.request("POST", f"/models/{name}/invoke", body, {"Content-Type": content_type})
        return status, json.loads(answer)

    def workers(self, name: str | None = None) -> list[psutil.Process]:
        """The python worker processes below this server (all, or those serving `name`)."""
        found = []
        for process in psutil.Process(self.popen.pid).children(recursive=True):
            try:
                argv = process.cmdline()
                if WORKER in " ".join(argv) and (name is None or name in argv):
                    found.append(process)
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=EXIT_TIMEOUT)


def start_server(run_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = allocate().bind  # below 32767: MMS 1.1.11 refuses higher ports ("Invalid port number")
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MCE_BIND_ADDRESS": "127.0.0.1",
        "MCE_RUN_DIR": str(run_dir),
        **(extra_env or {}),
    }
    log = open(run_dir.parent / f"{run_dir.name}.log", "wb")
    with log:
        popen = subprocess.Popen(
            [sys.executable, str(CONTAINER / "serve.py")], env=env, stdout=log, stderr=log
        )
    server = Server(popen, port)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise AssertionError(f"serve.py exited with {popen.returncode}; see {log.name}")
        try:
            if server.request("GET", "/ping")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.05)  # polling interval, bounded by the deadline
    server.stop()
    raise AssertionError(f"no /ping 200 within {READY_TIMEOUT} s; see {log.name}")


def gone(processes: list[psutil.Process], timeout: float) -> bool:
    """True once none of `processes` is running (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return not alive
        time.sleep(0.02)


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def reference(model_dir: Path, rows: np.ndarray) -> np.ndarray:
    """The digits forward pass, written independently of model_handler.py."""
    with np.load(model_dir / "model.npz", allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    x = rows * float(arrays["scale"])
    count = sum(1 for key in arrays if key.startswith("W"))
    for index in range(count):
        x = x @ arrays[f"W{index}"] + arrays[f"b{index}"]
        x = np.maximum(x, 0) if index < count - 1 else x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probabilities


def forget(server: Server, name: str, timeout: float = 10.0) -> bool:
    """DELETE a name that a load refused with 507, until a DELETE says 200.

    After that 507, MMS 1.1.11 unregisters the name itself, fails (its worker wait is interrupted) and
    puts it back with no worker: the ghost answers GET 200 with `"workers": []` and a new load 409. A
    DELETE that lands while MMS has it out of its table gets 404 although the ghost comes back; a DELETE
    after that removes it (200). Measured: MMS's own attempt always fails, so waiting for a 200 is safe.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.request("DELETE", f"/models/{name}")[0] == 200:
            return server.request("GET", f"/models/{name}")[0] == 404
        time.sleep(0.05)
    return False


def new_name() -> str:
    return uuid.uuid4().hex  # SageMaker hands the container an opaque key, not the artifact's name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three artifacts, built and unpacked as SageMaker would unpack them: name -> model directory."""
    out = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, str(CONTAINER / "build_model.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    unpacked = {}
    for artifact in sorted(out.glob("*/*.tar.gz")):
        name = artifact.name.removesuffix(".tar.gz")
        target = out / "unpacked" / name / "model"
        target.mkdir(parents=True)
        with tarfile.open(artifact) as tar:
            assert sorted(tar.getnames()) == ["meta.json", "model.npz"]
            tar.extractall(target, filter="data")
        unpacked[name] = target
    assert set(unpacked) == {"digits-logreg", "digits-mlp", "digits-small"}
    return unpacked


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("mms") / "run")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("mms-capped") / "run", {"MODEL_SERVER_MAX_MODELS": "1"})
    yield running
    assert running.stop() == 0


ROWS = np.random.default_rng(0).integers(0, 17, size=(5, 64)).astype(np.float64)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


PAYLOADS = {
    "bare list": (json.dumps(ROWS.tolist()).encode(), "application/json"),
    "inputs": (json.dumps({"inputs": ROWS.tolist()}).encode(), "application/json"),
    "instances": (json.dumps({"instances": ROWS.tolist()}).encode(), "application/json; charset=utf-8"),
    "csv": ("\n".join(",".join(str(int(v)) for v in row) for row in ROWS).encode(), "text/csv"),
    "npy": (npy(ROWS), "application/x-npy"),
}


@pytest.mark.parametrize("artifact", ["digits-logreg", "digits-mlp", "digits-small"])
def test_load_then_invoke_matches_numpy_reference(
    server: Server, models: dict[str, Path], artifact: str
) -> None:
    name = new_name()
    assert server.load(name, models[artifact]) == (200, {"status": "Workers scaled"})
    expected = reference(models[artifact], ROWS)
    for label, (body, content_type) in PAYLOADS.items():
        status, answer = server.invoke(name, body, content_type)
        assert status == 200, (label, answer)
        assert answer["model"] == artifact
        np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-9, atol=1e-12, err_msg=label)
        assert answer["labels"] == expected.argmax(axis=1).tolist()
    assert server.request("DELETE", f"/models/{name}")[0] == 200


def test_duplicate_load_is_409(server: Server, models: dict[str, Path]) -> None:
    name = new_name()
    assert server.load(name, models["digits-mlp"])[0] == 200
    status, body = server.load(name, models["digits-logreg"])
    assert status == 409
    assert body == {
        "code": 409,
        "type": "ConflictStatusException",
        "message": f"Model {name} is already registered.",
    }
    server.request("DELETE", f"/models/{name}")


@pytest.mark.parametrize(("method", "suffix"), [("POST", "/invoke"), ("GET", ""), ("DELETE", "")])
def test_unknown_model_is_404(server: Server, method: str, suffix: str) -> None:
    name = new_name()
    body = json.dumps([[0] * 64]).encode() if method == "POST" else None
    status, answer = server.request(
        method, f"/models/{name}{suffix}", body, {"Content-Type": "application/json"}
    )
    assert status == 404
    assert json.loads(answer)["type"] == "ModelNotFoundException"


def test_load_of_missing_directory_is_404(server: Server, tmp_path: Path) -> None:
    status, body = server.load(new_name(), tmp_path / "absent")
    assert status == 404
    assert body["type"] == "ModelNotFoundException"


def test_list_and_describe_on_the_bind_port(server: Server, models: dict[str, Path]) -> None:
    names = sorted(new_name() for _ in range(2))
    for name, artifact in zip(names, ["digits-logreg", "digits-small"], strict=True):
        assert server.load(name, models[artifact])[0] == 200
    status, body = server.request("GET", "/models")
    assert status == 200
    listed = {entry["modelName"]: entry["modelUrl"] for entry in json.loads(body)["models"]}
    assert listed[names[0]] == str(models["digits-logreg"])
    assert listed[names[1]] == str(models["digits-small"])
    status, body = server.request("GET", f"/models/{names[0]}")
    assert status == 200
    described = json.loads(body)
    assert described["modelName"] == names[0] and described["workers"][0]["status"] == "READY"
    for name in names:
        server.request("DELETE", f"/models/{name}")


def test_delete_unloads_and_stops_the_worker(server: Server, models: dict[str, Path]) -> None:
    name = new_name()
    assert server.load(name, models["digits-mlp"])[0] == 200
    workers = server.workers(name)
    assert workers, "no worker process found for the loaded model"
    status, body = server.request("DELETE", f"/models/{name}")
    assert (status, json.loads(body)) == (200, {"status": f'Model "{name}" unregistered'})
    assert gone(workers, timeout=5.0), [w.pid for w in workers]
    assert server.request("GET", f"/models/{name}")[0] == 404
    assert (
        server.request("POST", f"/models/{name}/invoke", b"[]", {"Content-Type": "application/json"})[0]
        == 404
    )


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"[[1, 2, 3]]", "application/json", "64 numbers"),
        (b"[1, 2, 3]", "application/json", "2-D"),
        (b"[]", "application/json", "2-D"),
        (b'{"rows": [[1]]}', "application/json", '"inputs"'),
        (b"[[1, 2", "application/json", "not valid JSON"),
        (json.dumps([["a"] * 64]).encode(), "application/json", "numbers"),
        (json.dumps([[1] * 64, [1] * 63]).encode(), "application/json", "64 numbers"),
        (("[" + ",".join(["1e999"] * 64) + "]").encode(), "application/json", "2-D"),
        (("[[" + ",".join(["NaN"] * 64) + "]]").encode(), "application/json", "finite"),
        (b"1,2,,4\n", "text/csv", "64"),
        (b"not npy", "application/x-npy", ".npy"),
        (npy(np.array([{"a": 1}], dtype=object)), "application/x-npy", ".npy"),
        (b"[[0]]", "text/plain", "Content-Type"),
    ],
)
def test_bad_payload_is_400_with_one_line(
    server: Server, models: dict[str, Path], body: bytes, content_type: str, message: str
) -> None:
    name = getattr(test_bad_payload_is_400_with_one_line, "model", None)
    if name is None:  # one model for all cases: loading per case would only slow the test down
        name = new_name()
        assert server.load(name, models["digits-logreg"])[0] == 200
        test_bad_payload_is_400_with_one_line.model = name  # type: ignore[attr-defined]
    status, answer = server.invoke(name, body, content_type)
    assert status == 400, answer
    assert answer["code"] == 400 and answer["type"] == "ValidationError"
    assert (
        message in answer["message"]
        and "\n" not in answer["message"]
        and "Traceback" not in answer["message"]
    )


def test_full_server_answers_507_until_a_model_is_unloaded(capped: Server, models: dict[str, Path]) -> None:
    first, second = new_name(), new_name()
    assert capped.load(first, models["digits-mlp"])[0] == 200
    status, body = capped.load(second, models["digits-logreg"])
    assert status == 507
    assert body == {"code": 507, "type": "InternalServerException", "message": "Failed to start workers"}
    # MMS 1.1.11 keeps the refused name registered with no worker: it must be deleted before a retry. Its own
    # cleanup races the DELETE (now and then it wins, and the DELETE only ever sees 404), so a load that meets
    # the ghost (409) deletes it again, as the gateway does (store.py, 409 after 507).
    forget(capped, second)
    assert capped.request("DELETE", f"/models/{first}")[0] == 200
    status = capped.load(second, models["digits-logreg"])[0]
    for _ in range(3):
        if status != 409:
            break
        forget(capped, second)
        status = capped.load(second, models["digits-logreg"])[0]
    assert status == 200
    status, answer = capped.invoke(second, *PAYLOADS["bare list"])
    assert status == 200 and answer["model"] == "digits-logreg"
    assert capped.request("DELETE", f"/models/{second}")[0] == 200


def test_sigterm_leaves_no_java_or_worker(tmp_path: Path, models: dict[str, Path]) -> None:
    running = start_server(tmp_path / "run")
    try:
        for artifact in ("digits-logreg", "digits-mlp"):
            assert running.load(new_name(), models[artifact])[0] == 200
        tree = psutil.Process(running.popen.pid).children(recursive=True)
        assert any("com.amazonaws.ml.mms.ModelServer" in p.cmdline() for p in tree)
        assert len(running.workers()) >= 2
    finally:
        code = running.stop()
    assert code == 0
    assert gone(tree, timeout=1.0), [(p.pid, p.name()) for p in tree if p.is_running()]
