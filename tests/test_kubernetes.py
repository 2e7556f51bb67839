"""`mce render kubernetes`: the seed endpoint, a Serial pipeline and a MultiModel endpoint rendered and
validated offline, with kubernetes-validate's bundled schemas (strict) for the oldest and newest versions
supported, and with the checks schemas cannot make (gateway.kubernetes.problems), each shown to catch its
mistake. No API server runs here."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.endpoint import load_endpoint
from gateway.kubernetes import problems, render

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
VERSIONS = ("1.29.0", "1.37.0")  # native sidecars (initContainers' restartPolicy) need 1.29


def multi_model(tmp_path: Path) -> Path:
    """examples/multi-model.yaml with its models under an s3:// prefix, as a cluster reads them."""
    document = yaml.safe_load((EXAMPLES / "multi-model.yaml").read_text())
    document["PrimaryContainer"]["ModelDataUrl"] = "s3://models/multi-model/"
    path = tmp_path / "multi-model.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def rendered(path: Path, **options: Any) -> dict[str, str]:
    return render(load_endpoint(path), source=str(path), **options)


def manifests(files: dict[str, str]) -> list[dict[str, Any]]:
    return [yaml.safe_load(text) for name, text in files.items() if name != "kustomization.yaml"]


@pytest.mark.parametrize("example", ["mnist-direct", "mnist-serial", "multi-model"])
def test_every_manifest_validates_and_serves_a_valid_document(example: str, tmp_path: Path) -> None:
    path = multi_model(tmp_path) if example == "multi-model" else EXAMPLES / f"{example}.yaml"
    files = rendered(path)
    assert yaml.safe_load(files["kustomization.yaml"])["resources"] == sorted(
        set(files) - {"kustomization.yaml"}, key=list(files).index
    )
    for manifest in manifests(files):
        for version in VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
    assert problems(manifests(files)) == []
    configmap = yaml.safe_load(files["configmap.yaml"])
    served = tmp_path / "served" / "endpoint.yaml"
    served.parent.mkdir()
    served.write_text(configmap["data"]["endpoint.yaml"])
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", str(served)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_pod_is_a_sagemaker_instance_with_the_gateway_as_sidecar() -> None:
    files = rendered(EXAMPLES / "mnist-direct.yaml", registry="registry.example.com/team")
    pod = yaml.safe_load(files["deployment.yaml"])["spec"]["template"]["spec"]
    gateway = pod["initContainers"][-1]
    assert (
        gateway["restartPolicy"] == "Always"
        and gateway["image"] == "registry.example.com/team/mce-gateway:latest"
    )
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["pytorch-mnist"]["image"] == "registry.example.com/team/mce/pytorch-mnist:latest"
    env = {e["name"]: e["value"] for e in containers["pytorch-mnist"]["env"]}
    assert env["SAGEMAKER_BIND_TO_PORT"] == "9100" and env["SAGEMAKER_SAFE_PORT_RANGE"] == "9101-9116"


def test_an_s3_model_is_fetched_by_an_init_step(tmp_path: Path) -> None:
    document = yaml.safe_load((EXAMPLES / "mnist-direct.yaml").read_text())
    document["Containers"][0]["ModelDataUrl"] = "s3://models/tensorflow/model.tar.gz"
    path = tmp_path / "endpoint.yaml"
    path.write_text(yaml.safe_dump(document))
    pod = yaml.safe_load(rendered(path)["deployment.yaml"])["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["args"] == ["fetch-model", "s3://models/tensorflow/model.tar.gz", "/opt/ml/model"]
    mounted = pod["containers"][0]["volumeMounts"][0]
    assert mounted == {"name": "model-tensorflow-mnist", "mountPath": "/opt/ml/model", "readOnly": True}


def broken(files: dict[str, str], mistake: str) -> list[dict[str, Any]]:
    found = copy.deepcopy(manifests(files))
    deployment = next(m for m in found if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    if mistake == "selector":
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "another"
    elif mistake == "shared port":
        env = pod["containers"][1]["env"]
        next(e for e in env if e["name"] == "SAGEMAKER_BIND_TO_PORT")["value"] = "9000"
    elif mistake == "probe port":
        pod["initContainers"][-1]["readinessProbe"]["httpGet"]["port"] = 8081
    elif mistake == "backend url":
        configmap = next(m for m in found if m["kind"] == "ConfigMap")
        configmap["data"]["endpoint.yaml"] = configmap["data"]["endpoint.yaml"].replace("9100", "9900")
    return found


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        ("selector", "does not match its pod's labels"),
        ("shared port", "both listen on port 9000"),
        ("probe port", "readinessProbe asks port 8081, which it does not listen on"),
        ("backend url", "the gateway's Backend http://127.0.0.1:9900 is not a port of the pod"),
    ],
)
def test_each_check_catches_its_mistake(mistake: str, caught: str) -> None:
    files = rendered(EXAMPLES / "mnist-direct.yaml")
    found = problems(broken(files, mistake))
    assert any(caught in problem for problem in found), found


def test_a_local_multi_model_prefix_is_refused() -> None:
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "render",
            "kubernetes",
            str(EXAMPLES / "multi-model.yaml"),
            "-o",
            "/nonexistent",
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 1
    assert "a MultiModel container's ModelDataUrl on Kubernetes is an s3:// prefix" in checked.stderr


def test_the_checked_in_example_is_what_render_makes(tmp_path: Path) -> None:
    out = tmp_path / "kubernetes"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "render",
            "kubernetes",
            "examples/mnist-direct.yaml",
            "-o",
            str(out),
        ],
        check=True,
        cwd=ROOT,
    )
    checked_in = EXAMPLES / "kubernetes"
    assert sorted(p.name for p in checked_in.iterdir()) == sorted(p.name for p in out.iterdir())
    for made in out.iterdir():
        assert (checked_in / made.name).read_text() == made.read_text(), made.name


def test_fetch_model_makes_a_model_archive_a_folder(tmp_path: Path) -> None:
    """The init step's command: what SageMaker does with ModelDataUrl before the container starts."""
    import tarfile

    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "model.pth").write_bytes(b"weights")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "content" / "model.pth", arcname="model.pth")
    target = tmp_path / "opt" / "ml" / "model"
    argv = [sys.executable, "-m", "gateway", "fetch-model", str(tmp_path / "model.tar.gz"), str(target)]
    subprocess.run(argv, check=True)
    assert sorted(p.name for p in target.iterdir()) == ["model.pth"]
    assert (target / "model.pth").read_bytes() == b"weights"
    missing = subprocess.run(
        [*argv[:-2], str(tmp_path / "none.tar.gz"), str(target)], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_autoscaling_on_invocations_per_pod() -> None:
    """The Prometheus adapter's rate of the gateway's own counter, per pod (README has the rule)."""
    files = rendered(EXAMPLES / "mnist-direct.yaml", invocations_per_pod=50)
    hpa = yaml.safe_load(files["hpa.yaml"])
    for version in VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "sagemaker_invocations_per_second"},
                "target": {"type": "AverageValue", "averageValue": "50"},
            },
        }
    ]
    assert yaml.safe_load(rendered(EXAMPLES / "mnist-direct.yaml")["hpa.yaml"])["spec"]["metrics"][0][
        "type"
    ] == ("Resource")
