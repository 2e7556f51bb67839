"""Real processes on 127.0.0.1: test containers and the gateway, each on a port the OS chose.

A process is ready when it prints its `listening on` line; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import pytest
import yaml
from botocore.config import Config

if TYPE_CHECKING:
    from gateway.launch.ports import PortAllocation
    from gateway.launch.process import ContainerProcess

HERE = Path(__file__).parent
CONTRACT_SERVER = HERE / "containers" / "contract_server.py"
MODEL_SERVER = HERE / "containers" / "multimodel_server.py"
READY_TIMEOUT = 30.0
_PORT_LINE = re.compile(r"listening on (?:http://[\d.]+:)?(\d+)")


@dataclass
class Proc:
    """A process started by a test, with the port it announced."""

    popen: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    early: list[str] = field(default_factory=list)  # what it printed before it was listening

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)


def start_process(argv: list[str], *, stderr: Path | None = None, env: dict[str, str] | None = None) -> Proc:
    """Start `argv` and wait (bounded) for its `listening on PORT` line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if stderr is not None:
        with open(stderr, "w") as err:  # the child keeps its own descriptor
            popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    else:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert popen.stdout is not None
        with popen.stdout:
            for line in popen.stdout:
                lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    early: list[str] = []
    try:
        while True:
            line = lines.get(timeout=READY_TIMEOUT)
            if not line:
                detail = Path(stderr).read_text() if stderr is not None else ""
                raise RuntimeError(f"{argv} exited with {popen.wait()} before it was ready\n{detail}")
            match = _PORT_LINE.search(line)
            if match:
                return Proc(popen, int(match.group(1)), lines, early)
            early.append(line)
    except BaseException:
        popen.kill()
        popen.wait()
        raise


class Processes:
    """Everything a test started; all of it is killed when the test (or module) ends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Proc] = []

    def container(self, name: str, *, ping_status: int = 200, port: int = 0) -> Proc:
        """tests/containers/contract_server.py; `port` 0: the OS chooses (or a port one that died had)."""
        argv = [sys.executable, str(CONTRACT_SERVER), "--name", name, "--port", str(port)]
        proc = start_process([*argv, "--ping-status", str(ping_status)])
        self.started.append(proc)
        return proc

    def model_container(self, *, capacity: int | None = None) -> Proc:
        """tests/containers/multimodel_server.py: SageMaker's multi-model API."""
        argv = [sys.executable, str(MODEL_SERVER), "--port", "0"]
        if capacity is not None:
            argv += ["--capacity", str(capacity)]
        proc = start_process(argv)
        self.started.append(proc)
        return proc

    def write_endpoint(self, document: dict[str, Any], name: str = "endpoint.yaml") -> Path:
        path = self.tmp / name
        if name.endswith(".json"):
            path.write_text(json.dumps(document))
        else:
            path.write_text(yaml.safe_dump(document))
        return path

    def gateway(self, document: dict[str, Any], *extra: str, env: dict[str, str] | None = None) -> Proc:
        path = self.write_endpoint(document)
        proc = start_process(
            [sys.executable, "-m", "gateway", "serve", str(path), "--port", "0", *extra],
            stderr=self.tmp / "gateway.log",
            env=env,
        )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    processes = Processes(tmp_path_factory.mktemp("procs"))
    yield processes
    processes.stop_all()


_OPEN_CLIENTS: weakref.WeakSet[Any] = weakref.WeakSet()


def aws_client(
    service: str,
    url: str,
    *,
    key: tuple[str, str] = ("AKIDTEST", "secret"),
    region: str = "us-east-1",
    config: Config | None = None,
) -> Any:
    """An unmodified boto3 client for `service` at `url`, retries off (spec §1.3) unless `config` says
    otherwise. Every client made here is closed when the test ends (`_close_clients`): a client the garbage
    collector finds later, with a pooled socket still open, is a ResourceWarning in whichever test is running
    then, and warnings are errors here."""
    client = boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=config or Config(retries={"max_attempts": 1}),
    )
    _OPEN_CLIENTS.add(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in list(_OPEN_CLIENTS):
        client.close()  # a module-scoped client still works afterwards: botocore opens a new pool
    # then collect: a socket the test left open (a response body it never read keeps its connection out of
    # the pool that closing closes) warns here, in the test that left it, not in whichever test the
    # collector happens to run in later
    gc.collect()


def runtime_client(url: str, *, read_timeout: float = 30.0) -> Any:
    """An unmodified boto3 sagemaker-runtime client pointed at `url`, retries off (spec §1.3)."""
    config = Config(retries={"max_attempts": 1}, read_timeout=read_timeout, connect_timeout=5)
    return aws_client("sagemaker-runtime", url, config=config)


def container_doc(name: str | None, url: str, **backend: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Image": "example/contract:latest",
        "Backend": {"Protocol": "sagemaker", "Url": url, **backend},
    }
    if name is not None:
        doc["ContainerHostname"] = name
    return doc


def multi_model_doc(name: str | None, url: str, prefix: Path | str, **multi_model: Any) -> dict[str, Any]:
    """A MultiModel container at `url` whose models are under `prefix`; `multi_model`: Backend.MultiModel."""
    doc = {**container_doc(name, url), "Mode": "MultiModel", "ModelDataUrl": str(prefix)}
    if multi_model:
        doc["Backend"]["MultiModel"] = multi_model
    return doc


def write_artifact(path: Path, files: dict[str, str | bytes]) -> Path:
    """A model artifact: a .tar.gz holding `files` at its top level."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def endpoint_doc(mode: str, containers: list[dict[str, Any]], name: str = "demo") -> dict[str, Any]:
    return {"EndpointName": name, "InferenceExecutionConfig": {"Mode": mode}, "Containers": containers}


ROOT = HERE.parent
PYTORCH_BUILD = ROOT / "build" / "pytorch"


def build_pytorch_model() -> Path:
    """containers/pytorch's build (cheap when nothing changed); returns the model store."""
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "pytorch" / "build_model.py")], check=True, timeout=600
    )
    return PYTORCH_BUILD / "model-store"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll `condition` until it holds; readiness has no event to wait on, so it is asked, with a deadline."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        time.sleep(0.1)


@dataclass
class NativeServer:
    """A serving container run natively by its start script, on SageMaker-style ports (its
    SAGEMAKER_BIND_TO_PORT and the extra ports of SAGEMAKER_SAFE_PORT_RANGE), as the launcher runs one."""

    process: ContainerProcess
    ports: PortAllocation

    def on(self, port: int, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{port}"

    def ready(self) -> bool:
        """Whether it serves its models now."""
        raise NotImplementedError


NativeKind = TypeVar("NativeKind", bound=NativeServer)


def start_native(
    kind: Callable[[ContainerProcess, PortAllocation], NativeKind],
    argv: list[str],
    env: dict[str, str],
    log: Path,
    what: str,
) -> NativeKind:
    """Start `argv` with the ports' environment and `env`, bound to 127.0.0.1; until it is `ready()`."""
    from gateway.launch.ports import allocate
    from gateway.launch.process import ContainerProcess

    ports = allocate()
    environment = {**os.environ, **ports.environment(), "MCE_BIND_ADDRESS": "127.0.0.1", **env}
    process = ContainerProcess(argv, env=environment, log_path=log)
    server = kind(process, ports)
    _await_ready(process, server.ready, what, log)
    return server


class TorchServe(NativeServer):
    @property
    def rest(self) -> str:
        return self.on(self.ports.bind)

    @property
    def management(self) -> str:
        return self.on(self.ports.extra(0))

    @property
    def grpc(self) -> str:
        return self.on(self.ports.extra(2), "grpc")

    def ready(self) -> bool:
        return self.model_ready()

    def model_ready(self, model: str = "mnist") -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.management}/models/{model}", timeout=2) as response:
                return any(w["status"] == "READY" for m in json.loads(response.read()) for w in m["workers"])
        except OSError:
            return False


def start_torchserve(run_dir: Path) -> TorchServe:
    """A real TorchServe (containers/pytorch/serve.py) on ports SageMaker-style, model loaded and ready."""
    return start_native(
        TorchServe,
        [sys.executable, str(ROOT / "containers" / "pytorch" / "serve.py")],
        {"MCE_MODEL_DIR": str(build_pytorch_model()), "MCE_RUN_DIR": str(run_dir / "torchserve")},
        run_dir / "torchserve.log",
        "TorchServe's model ready",
    )


TENSORFLOW_BUILD = ROOT / "build" / "tensorflow"


def build_tensorflow_model() -> Path:
    """containers/tensorflow's build (cheap when nothing changed); returns the model directory."""
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "tensorflow" / "build_model.py")], check=True, timeout=900
    )
    return TENSORFLOW_BUILD / "model"


class TfServing(NativeServer):
    @property
    def rest(self) -> str:
        return self.on(self.ports.bind)

    @property
    def grpc(self) -> str:
        return self.on(self.ports.extra(0), "grpc")

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.rest}/v1/models/mnist", timeout=2) as response:
                return any(
                    v["state"] == "AVAILABLE" for v in json.loads(response.read())["model_version_status"]
                )
        except OSError:
            return False


def start_tfserving(run_dir: Path) -> TfServing:
    """containers/tensorflow/serve.sh natively (the stand-in, here), on SageMaker-style ports, model
    AVAILABLE."""
    return start_native(
        TfServing,
        ["sh", str(ROOT / "containers" / "tensorflow" / "serve.sh")],
        {"MCE_MODEL_DIR": str(build_tensorflow_model()), "MCE_PYTHON": sys.executable},
        run_dir / "tfserving.log",
        "TF Serving's model AVAILABLE",
    )


def assert_is_what_render_makes(checked_in: Path, tmp: Path, *render: str) -> None:
    """The checked-in file or folder `checked_in` is, byte for byte, what `mce render RENDER...` makes
    from the repository's root: a file as it prints it (its paths relative to the root), a folder as it
    writes it with -o (a generated file kept in the repository must not go stale)."""
    argv = [sys.executable, "-m", "gateway", "render", *render]
    again = f"mce render {' '.join(render)} -o {checked_in.relative_to(ROOT)}"
    if checked_in.is_file():
        printed = subprocess.run(
            argv, capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
        ).stdout
        assert checked_in.read_text() == printed, f"{checked_in.name} is stale: {again}"
        return
    out = tmp / "rendered" / checked_in.name
    subprocess.run([*argv, "-o", str(out)], check=True, cwd=ROOT, timeout=60)
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    kept = sorted(p.relative_to(checked_in).as_posix() for p in checked_in.rglob("*") if p.is_file())
    assert kept == made, f"{checked_in.name} is stale: {again}"
    for name in made:
        assert (checked_in / name).read_text() == (out / name).read_text(), f"{name} is stale: {again}"


TRITON_BUILD = ROOT / "build" / "triton"


def build_triton_models() -> Path:
    """containers/triton's build (cheap when nothing changed); returns the model repository."""
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "triton" / "build_model.py")], check=True, timeout=600
    )
    return TRITON_BUILD / "model-repository"


@dataclass
class Triton(NativeServer):
    mode: str = "kserve"

    @property
    def http(self) -> str:
        """Triton's HTTP API (kserve mode), or its SageMaker service (sagemaker mode)."""
        return self.on(self.ports.bind)

    @property
    def grpc(self) -> str:
        return self.on(self.ports.extra(0), "grpc")

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.ports.extra(0)}"

    def ready(self) -> bool:
        import urllib.request

        path = "/v2/health/ready" if self.mode == "kserve" else "/ping"
        try:
            with urllib.request.urlopen(self.http + path, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def start_triton(run_dir: Path, mode: str = "kserve", env: dict[str, str] | None = None) -> Triton:
    """containers/triton/serve.py natively (the tritonserver nvidia-pytriton bundles), on SageMaker-style
    ports on 127.0.0.1, every model loaded."""
    environment = {"MCE_MODEL_DIR": str(build_triton_models()), "MCE_RUN_DIR": str(run_dir / "runtime")}
    return start_native(
        lambda process, ports: Triton(process, ports, mode),
        [sys.executable, str(ROOT / "containers" / "triton" / "serve.py"), mode],
        {**environment, **(env or {})},
        run_dir / f"triton-{mode}.log",
        f"Triton ({mode}) ready",
    )


def _await_ready(process: ContainerProcess, ready: Callable[[], bool], what: str, log: Path) -> None:
    """Until `ready()`, or fail with the container's log if it exits first; stop it on any failure."""
    try:
        wait_until(lambda: ready() or process.returncode is not None, what)
    except BaseException:
        process.stop()
        raise
    if process.returncode is not None:
        raise RuntimeError(f"{what}: the container exited {process.returncode}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def clients() -> Callable[..., Any]:
    """runtime_client (closed when the test ends, as every client aws_client makes)."""
    return runtime_client


def sign(
    url: str,
    key: str,
    secret: str,
    *,
    body: bytes,
    headers: dict[str, str],
    method: str = "POST",
    region: str = "us-east-1",
    service: str = "sagemaker",
    when: datetime.datetime | None = None,
) -> dict[str, str]:
    """`headers` plus a SigV4 signature for sagemaker, made with botocore's signer, as boto3 signs.

    For requests boto3 would not send: raw sockets, a chosen X-Amz-Content-SHA256, a body swapped after."""
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    stamp = (when or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    host = urlsplit(url).netloc
    request = AWSRequest(
        method=method, url=url, data=body, headers={"Host": host, "X-Amz-Date": stamp, **headers}
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key, secret), service, region)
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    names = signer.signed_headers(signer.headers_to_sign(request))
    signed = dict(request.headers.items())
    signed["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key}/{stamp[:8]}/{region}/{service}/aws4_request, "
        f"SignedHeaders={names}, Signature={signature}"
    )
    return signed


def raw_exchange(port: int, data: bytes, *, timeout: float = 15.0) -> bytes:
    """Send `data` on a new connection and read until the gateway closes it (raw bytes, no client library)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            chunks.append(piece)
    return b"".join(chunks)


def invoke(
    client: Any, target: str | None = None, doc: object = None, *, endpoint: str = "demo", **kwargs: Any
) -> dict[str, Any]:
    """InvokeEndpoint as boto3 sends it: `doc` as JSON (or the `Body` given), `target` as
    TargetContainerHostname. The response comes back with its `Body` read, as bytes (an unread body keeps
    its connection open)."""
    if target is not None:
        kwargs["TargetContainerHostname"] = target
    if "Body" not in kwargs:
        kwargs["Body"] = json.dumps(doc if doc is not None else {})
    response: dict[str, Any] = client.invoke_endpoint(EndpointName=endpoint, **kwargs)
    response["Body"] = response["Body"].read()
    return response


def scrape(url: str, *, key: tuple[str, str] | None = None) -> dict[tuple[str, str], float]:
    """The gateway's /metrics as {(sample name, container): value}, histogram buckets left out; signed
    with `key` (access key id, secret) for a gateway under --access."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    headers = sign(url + "/metrics", *key, body=b"", headers={}, method="GET") if key else {}
    request = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # labels are bounded: configured names and reasons, never a client's value (STYLE 10)
            assert set(sample.labels) <= {"endpoint", "variant", "container", "reason", "le"}, sample
            if "le" not in sample.labels:
                found[(sample.name, sample.labels.get("container", ""))] = sample.value
    return found


def posts(container: Proc) -> int:
    """How many POST requests a contract container has read (a request that reached it twice shows)."""
    import urllib.request

    with urllib.request.urlopen(container.url + "/count", timeout=10) as response:
        return int(response.read())


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics at `url` with these labels (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def s3_environment(url: str) -> dict[str, str]:
    """What a process needs to reach the `s3` fixture's server with botocore's usual chain."""
    return {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "AKIDS3",
        "AWS_SECRET_ACCESS_KEY": "s3",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture
def s3() -> Iterator[tuple[str, Any]]:
    """A local S3-compatible server (moto's server mode, a real HTTP server) and a client for it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = "http://{}:{}".format(*server.get_host_and_port())
    client = aws_client("s3", url, key=("AKIDS3", "s3"), config=Config())
    client.create_bucket(Bucket="models")
    yield url, client
    server.stop()


@pytest.fixture
def local_s3(tmp_path: Path, s3: tuple[str, Any]) -> Iterator[tuple[Any, Any]]:
    """`mce up` (test_local_sagemaker.LocalSageMaker) that reaches the `s3` fixture's server, and a client
    for that server; stopped with SIGTERM at the end."""
    from test_local_sagemaker import LocalSageMaker

    with LocalSageMaker(tmp_path, env=s3_environment(s3[0])) as server:
        yield server, s3[1]


# Docker: a real engine (.ci/run starts one), never skipped silently
DOCKER_OPTIONAL = "MCE_TESTS_WITHOUT_DOCKER"  # =1: the Docker tests skip, loudly, instead of failing
BASE_IMAGES = ("python:3.11-slim-bookworm",)  # what the test images are built FROM: containers/bases/build


def docker(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    found = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no buildx here
    )
    if check and found.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {found.returncode}: {found.stderr.strip()}")
    return found


def require_docker() -> None:
    """A Docker engine that answers, with the base images the test images build on; else the test fails
    saying what to do (or skips, saying so, when MCE_TESTS_WITHOUT_DOCKER=1)."""
    try:
        answered = docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False)
        problem = None if answered.returncode == 0 else answered.stderr.strip() or "no answer"
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem is None:
        missing = [b for b in BASE_IMAGES if docker("image", "inspect", b, check=False).returncode != 0]
        if missing:
            problem = f"the engine lacks the base images {missing}: run `bash containers/bases/build`"
    if problem is None:
        return
    message = (
        f"NO DOCKER ENGINE FOR THE DOCKER TESTS: {problem}. Start one (bash .ci/docker does: Debian's "
        f"docker.io, dockerd --iptables=false), or set {DOCKER_OPTIONAL}=1 to skip these tests."
    )
    if os.environ.get(DOCKER_OPTIONAL) == "1":
        pytest.skip(message)
    pytest.fail(message)


def build_image(tag: str, context: Path, dockerfile: Path | None = None, **build_args: str) -> str:
    """`docker build` (the classic builder) of `context` as `tag`, on the host's network (a bridge has no
    outside network on these machines, and a build may install packages)."""
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    docker("build", "--quiet", "--network", "host", *args, "-t", tag, str(context), timeout=1800)
    return tag


def containers_labelled(label: str) -> list[dict[str, Any]]:
    """Every container (running or not) carrying `label` (key or key=value), inspected."""
    names = docker("ps", "--all", "--quiet", "--filter", f"label={label}").stdout.split()
    return json.loads(docker("inspect", *names).stdout) if names else []
