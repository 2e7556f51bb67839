"""compose.yaml: valid compose, exactly what `mce render compose` makes of examples/mnist-direct.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from conftest import ROOT, Processes, assert_is_what_render_makes

from gateway.endpoint import load_endpoint
from gateway.launch.layout import at_hostnames

DOCUMENT = ROOT / "examples" / "mnist-direct.yaml"
COMPOSE = ROOT / "compose.yaml"


def test_compose_file_is_what_render_makes(tmp_path: Path) -> None:
    assert_is_what_render_makes(COMPOSE, tmp_path, "compose", "examples/mnist-direct.yaml")


def test_compose_file_is_valid_compose() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_agrees_with_the_endpoint_document() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    endpoint = load_endpoint(DOCUMENT)
    served = at_hostnames(endpoint)
    names = [endpoint.hostname(i) for i in range(len(endpoint.containers))]
    assert set(services) == {*names, "gateway"}
    assert services["gateway"]["depends_on"] == {n: {"condition": "service_healthy"} for n in names}
    assert all(port.startswith("127.0.0.1:") for s in services.values() for port in s.get("ports", []))
    for name, container in zip(names, served.containers, strict=True):
        service = services[name]
        assert service["hostname"] == name and service["image"] == container.Image
        first = int(service["environment"]["SAGEMAKER_SAFE_PORT_RANGE"].split("-")[0])
        bind = int(service["environment"]["SAGEMAKER_BIND_TO_PORT"])
        url = container.Backend.Url
        assert url is not None and url.split("//")[1].split(":")[0] == name
        port = int(url.rsplit(":", 1)[1])
        assert port == bind or first <= port <= first + 15, (name, url)
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert "deploy" in service and service["healthcheck"]["test"]


def test_gateway_command_serves_the_document_by_hostname(procs: Processes) -> None:
    """What the compose gateway runs, run here: it starts, and /ping names both containers (not resolvable
    here)."""
    gateway = procs.gateway(yaml.safe_load(DOCUMENT.read_text()), "--by-hostname")
    try:
        urllib.request.urlopen(gateway.url + "/ping", timeout=20)
    except urllib.error.HTTPError as error:
        with error:
            report = json.loads(error.read())
    assert set(report["containers"]) == {"tensorflow-mnist", "pytorch-mnist", "triton-mnist"}
    assert report["status"] == "Unhealthy"


def test_multi_model_endpoint_renders_with_a_shared_model_volume(tmp_path: Path) -> None:
    """The gateway unpacks models where the container reads them: one volume at the same path in both."""
    out = tmp_path / "compose.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "render",
            "compose",
            str(ROOT / "examples" / "multi-model.yaml"),
            "-o",
            str(out),
        ],
        check=True,
        cwd=ROOT,
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.compose-spec",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml.safe_load(out.read_text())
    gateway, container = compose["services"]["gateway"], compose["services"]["container-1"]
    assert gateway["command"][-2:] == ["--model-cache", "/opt/ml/models"]
    assert "models:/opt/ml/models" in gateway["volumes"]
    assert container["volumes"] == ["models:/opt/ml/models:ro"]
    assert container["environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    assert compose["volumes"] == {"models": {}}
    # the prefix, mounted where the document's relative ModelDataUrl points from /etc/mce/endpoint.yaml
    prefix = next(v for v in gateway["volumes"] if v.endswith(":ro") and "multi-model/models" in v)
    source, inside, _ = prefix.split(":")
    assert inside == "/etc/build/multi-model/models"  # /etc/mce/ + ../build/multi-model/models
    assert (tmp_path / source).resolve() == (ROOT / "build" / "multi-model" / "models").resolve()
