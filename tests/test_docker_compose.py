"""`docker compose up` for real: the seed endpoint's compose.yaml, a Serial pipeline and a multi-model
endpoint, each built, brought up with `--wait`, invoked with boto3 and brought down with nothing left.

Each project has a name of its own and the port the test picked. The only thing these machines need
beyond the project's files is an override: builds on the host network (containers on a bridge have no
outside network here), and the gateway's port. Built images are kept: their layers serve the next build."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, docker, require_docker, runtime_client

EXAMPLES = ROOT / "examples"
BUILD_TIMEOUT = 1800.0  # seconds: a cold build installs TensorFlow, TorchServe and Java
WAIT_TIMEOUT = 300  # seconds for every service to be healthy
# A test builds its images first: on an engine with no cache that is minutes, past the suite's 120 s.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + WAIT_TIMEOUT + 300)


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    require_docker()
    version = docker("compose", "version", check=False)
    assert version.returncode == 0, (
        "no `docker compose` (Compose v2 as the docker CLI's plugin): bash .ci/docker links it"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Project:
    """One compose project: a unique name, the compose file and this machine's override."""

    def __init__(self, compose_file: Path, tmp: Path) -> None:
        self.name = f"mce-test-{secrets.token_hex(3)}"
        self.port = free_port()
        self.file = compose_file
        services = yaml.safe_load(compose_file.read_text())["services"]
        lines = ["services:"]
        for service, spec in services.items():
            lines.append(f"  {service}:")
            if "build" in spec:
                lines.append("    build: {network: host}")
            if service == "gateway":
                lines.append(f'    ports: !override ["127.0.0.1:{self.port}:8080"]')
            if len(lines[-1]) == len(f"  {service}:"):
                lines.pop()
        self.override = tmp / f"{self.name}.override.yaml"
        self.override.write_text("\n".join(lines) + "\n")
        self.url = f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(self.file), "-f", str(self.override)]
        return docker("compose", "-p", self.name, *files, *args, timeout=timeout)

    def up(self) -> None:
        self.compose("build", timeout=BUILD_TIMEOUT)
        try:
            self.compose("up", "--wait", "--wait-timeout", str(WAIT_TIMEOUT), timeout=WAIT_TIMEOUT + 60)
        except AssertionError as failed:
            logs = self.compose("logs", "--no-color", "--tail", "30").stdout
            raise AssertionError(f"{failed}\n{logs}") from None

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=180)

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.name}"
        found = {
            "containers": docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
            "networks": docker("network", "ls", "--quiet", "--filter", label).stdout.split(),
            "volumes": docker("volume", "ls", "--quiet", "--filter", label).stdout.split(),
        }
        return {kind: names for kind, names in found.items() if names}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Any]:
    started: list[Project] = []

    def start(compose_file: Path) -> Project:
        running = Project(compose_file, tmp_path)
        started.append(running)
        running.up()
        return running

    yield start
    for running in started:
        running.down()
        assert running.leftovers() == {}, f"{running.name} left things behind"


def render(document: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "gateway", "render", "compose", str(document), "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def run_invoke(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "invoke.py"), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_seed_endpoints_compose_file(project: Any) -> None:
    running = project(ROOT / "compose.yaml")
    for line in run_invoke(running.url).strip().splitlines():
        predicted, truth = line.split("->")[1].split("truth:")
        assert predicted.strip() == truth.strip(), line
    client = runtime_client(running.url)
    with pytest.raises(client.exceptions.ValidationError, match="nobody"):
        client.invoke_endpoint(EndpointName="mnist-direct", TargetContainerHostname="nobody", Body=b"{}")
    client.close()
    # from inside the compose network, by its service name (Host: gateway:8080, which the render allows),
    # and with a name the render does not allow
    asked = running.compose("exec", "-T", "tensorflow-mnist", "python", "-c", BY_SERVICE_NAME).stdout
    assert asked.split() == ["200", "403"], asked


BY_SERVICE_NAME = """
import urllib.error, urllib.request
for host in ("gateway:8080", "rebind.attacker.example:8080"):
    request = urllib.request.Request("http://gateway:8080/ping", headers={"Host": host})
    try:
        print(urllib.request.urlopen(request, timeout=10).status)
    except urllib.error.HTTPError as refused:
        print(refused.code)
"""


def test_a_serial_pipeline_in_compose(project: Any, tmp_path: Path) -> None:
    running = project(render(EXAMPLES / "mnist-serial.yaml", tmp_path / "compose.yaml"))
    answer = json.loads(run_invoke("--serial", running.url).split("->")[1].split("truth:")[0])
    assert answer["labels"] == [0, 1, 2, 3, 4]
    client = runtime_client(running.url)
    with pytest.raises(client.exceptions.ModelError, match="preprocess"):
        client.invoke_endpoint(EndpointName="mnist-serial", ContentType="application/json", Body=b"{}")
    client.close()


def test_a_multi_model_endpoint_in_compose(project: Any, tmp_path: Path) -> None:
    """The gateway unpacks each model into the volume it shares with the container (as its own user, on
    Python 3.11.2: the stand-in's) and the container loads it from there."""
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "multi-model" / "build_model.py")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    running = project(render(EXAMPLES / "multi-model.yaml", tmp_path / "compose.yaml"))
    client = runtime_client(running.url)
    example = yaml.safe_load((EXAMPLES / "multi-model.yaml").read_text())["PrimaryContainer"]["Backend"]
    for model in ("digits-logreg.tar.gz", "digits-mlp.tar.gz", "digits-logreg.tar.gz"):
        answer = client.invoke_endpoint(
            EndpointName="multi-model",
            TargetModel=model,
            ContentType="application/json",
            Body=example["Example"]["Body"],
        )
        assert json.loads(answer["Body"].read())["predictions"], model
    with pytest.raises(client.exceptions.ValidationError):
        client.invoke_endpoint(EndpointName="multi-model", TargetModel="../escape.tar.gz", Body=b"{}")
    client.close()
