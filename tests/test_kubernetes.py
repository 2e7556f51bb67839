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
    from conftest import assert_is_what_render_makes

    assert_is_what_render_makes(EXAMPLES / "kubernetes", tmp_path, "kubernetes", "examples/mnist-direct.yaml")


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
    """The Prometheus adapter's rate of the gateway's own counter, per pod (docs/running.md has the rule)."""
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


# --- Production variants: rendered from a SageMaker API (the local SageMaker's) --------------------

NODE_MODULES = ROOT / ".venv" / "npm" / "node_modules"
HTTPROUTE_CHECK = """
const { HTTPRoute } = require("@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute");
const route = JSON.parse(require("fs").readFileSync(0, "utf8"));
try { new HTTPRoute(route).validate(); console.log("valid"); } catch (e) { console.log(e.message); }
"""
PYTORCH_DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.13.0-cpu-py311"


def httproute_errors(route: dict[str, Any]) -> str:
    """Gateway API's own schema for HTTPRoute (npm @kubernetes-models/gateway-api, bash .ci/setup): 'valid'
    or what is wrong."""
    import json
    import os
    import shutil

    assert shutil.which("node"), (
        "node is needed to validate HTTPRoute (Node.js; bash .ci/setup installs the schema)"
    )
    assert (NODE_MODULES / "@kubernetes-models" / "gateway-api").is_dir(), (
        "bash .ci/setup installs the schema"
    )
    checked = subprocess.run(
        ["node", "-e", HTTPROUTE_CHECK],
        input=json.dumps(route),
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        timeout=60,
        check=True,
    )
    return checked.stdout.strip()


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An endpoint of two variants, made with boto3 in a local SageMaker and rendered from its API:
    blue, Direct (an echo server and the Triton image), weight 3; green, SageMaker's PyTorch image with
    its model in S3, weight 1. Whether they start does not matter to the render."""
    from test_local_sagemaker import ROLE, LocalSageMaker, image_map

    tmp = tmp_path_factory.mktemp("variants")
    local = LocalSageMaker(tmp)
    try:
        sm = local.sagemaker()
        sm.create_model(
            ModelName="blue",
            ExecutionRoleArn=ROLE,
            Containers=[
                {"ContainerHostname": "echo", "Image": "test/echo:1"},
                {"ContainerHostname": "digits", "Image": "mce/triton-mnist:latest"},
            ],
            InferenceExecutionConfig={"Mode": "Direct"},
        )
        sm.create_model(
            ModelName="green",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": PYTORCH_DLC, "ModelDataUrl": "s3://models/torch/model.tar.gz"},
        )
        sm.create_endpoint_config(
            EndpointConfigName="split",
            ProductionVariants=[
                {
                    "VariantName": "blue",
                    "ModelName": "blue",
                    "InitialVariantWeight": 3.0,
                    "InitialInstanceCount": 2,
                },
                {"VariantName": "green", "ModelName": "green", "InitialVariantWeight": 1.0},
            ],
        )
        sm.create_endpoint(EndpointName="split", EndpointConfigName="split")
        out = tmp / "k8s"
        argv = [sys.executable, "-m", "gateway", "render", "kubernetes", "--endpoint", "split"]
        argv += ["--from", local.url, "--images", str(image_map(tmp / "render-images.yaml")), "-o", str(out)]
        argv += ["--route-parent", "ingress/public"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.yaml")}
    finally:
        local.stop()


def test_each_variant_is_a_deployment_of_its_own_behind_one_httproute(two_variants: dict[str, str]) -> None:
    assert yaml.safe_load(two_variants["kustomization.yaml"])["resources"] == [
        "blue",
        "green",
        "httproute.yaml",
    ]
    for variant in ("blue", "green"):
        files = {
            name.split("/", 1)[1]: text
            for name, text in two_variants.items()
            if name.startswith(f"{variant}/")
        }
        assert sorted(files) == sorted(
            [
                "configmap.yaml",
                "deployment.yaml",
                "service.yaml",
                "hpa.yaml",
                "pdb.yaml",
                "kustomization.yaml",
            ]
        )
        for manifest in manifests(files):
            assert manifest["metadata"]["name"].startswith(f"split-{variant}")
            for version in VERSIONS:
                kubernetes_validate.validate(manifest, version, strict=True)
        assert problems(manifests(files)) == []
        deployment = yaml.safe_load(files["deployment.yaml"])
        pod = deployment["spec"]["template"]["spec"]
        assert pod["initContainers"][-1]["args"][-2:] == ["--variant", variant]
        instances = {"blue": 2, "green": 1}[variant]  # InitialInstanceCount: the pods it keeps at least
        assert deployment["spec"]["replicas"] == instances
        assert yaml.safe_load(files["hpa.yaml"])["spec"]["minReplicas"] == instances
    route = yaml.safe_load(two_variants["httproute.yaml"])
    assert httproute_errors(route) == "valid"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "ingress"}]
    rules = route["spec"]["rules"]
    named = {r["matches"][0]["headers"][0]["value"]: r["backendRefs"] for r in rules if "matches" in r}
    assert named == {
        "blue": [{"name": "split-blue", "port": 8080}],
        "green": [{"name": "split-green", "port": 8080}],
    }
    assert rules[-1]["backendRefs"] == [
        {"name": "split-blue", "port": 8080, "weight": 3000},
        {"name": "split-green", "port": 8080, "weight": 1000},
    ]


def test_a_variants_containers_run_their_images_as_sagemaker_runs_them(two_variants: dict[str, str]) -> None:
    """The project's own images keep their protocols; SageMaker's framework image, which mce emulates
    natively, is reached by the SageMaker contract on the cluster, its model fetched from S3."""
    blue = yaml.safe_load(yaml.safe_load(two_variants["blue/configmap.yaml"])["data"]["endpoint.yaml"])
    protocols = {
        c["ContainerHostname"]: c["Backend"].get("Protocol", "sagemaker") for c in blue["Containers"]
    }
    assert protocols == {"echo": "sagemaker", "digits": "kserve-v2-rest"}
    green = yaml.safe_load(yaml.safe_load(two_variants["green/configmap.yaml"])["data"]["endpoint.yaml"])
    assert green["PrimaryContainer"]["Backend"] == {"Url": "http://127.0.0.1:9000"}  # the contract
    pod = yaml.safe_load(two_variants["green/deployment.yaml"])["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"] == [
        "fetch-model",
        "s3://models/torch/model.tar.gz",
        "/opt/ml/model",
    ]
    assert pod["containers"][0]["image"] == PYTORCH_DLC


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        ("unknown service", "split-purple, which is not a rendered Service"),
        ("wrong port", "port 9999 of split-blue"),
        ("no header rule", "a request naming variant green does not reach split-green"),
        ("no weight", "no variant has weight"),
    ],
)
def test_each_route_check_catches_its_mistake(
    two_variants: dict[str, str], mistake: str, caught: str
) -> None:
    from gateway.kubernetes import route_problems

    route = yaml.safe_load(two_variants["httproute.yaml"])
    services = [yaml.safe_load(two_variants[f"{v}/service.yaml"]) for v in ("blue", "green")]
    assert route_problems(route, services) == []
    rules = route["spec"]["rules"]
    if mistake == "unknown service":
        rules[-1]["backendRefs"][0]["name"] = "split-purple"
    elif mistake == "wrong port":
        rules[0]["backendRefs"][0]["port"] = 9999
    elif mistake == "no header rule":
        del rules[1]
    elif mistake == "no weight":
        for ref in rules[-1]["backendRefs"]:
            ref["weight"] = 0
    found = route_problems(route, services)
    assert any(caught in problem for problem in found), found


def test_the_httproute_schema_catches_a_broken_route(two_variants: dict[str, str]) -> None:
    """The schema check can fail: a negative weight and a port that is not a number."""
    route = yaml.safe_load(two_variants["httproute.yaml"])
    route["spec"]["rules"][-1]["backendRefs"][0].update(weight=-1, port="http")
    errors = httproute_errors(route)
    assert "weight must be >= 0" in errors and "port must be integer" in errors


def test_an_endpoint_the_api_does_not_know_is_a_clear_error(tmp_path: Path) -> None:
    from test_local_sagemaker import LocalSageMaker

    local = LocalSageMaker(tmp_path)
    try:
        argv = [sys.executable, "-m", "gateway", "render", "kubernetes", "--endpoint", "nosuch"]
        result = subprocess.run(
            [*argv, "--from", local.url, "-o", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "describe_endpoint: ValidationException" in result.stderr and "Traceback" not in result.stderr
    finally:
        local.stop()


def test_a_variants_gateway_answers_as_that_variant(procs: Any) -> None:
    """`mce serve --variant blue` (each variant's pod): the answer names it, a request may ask for it,
    and one asking for another variant is refused as SageMaker refuses it."""
    from conftest import container_doc, endpoint_doc, runtime_client

    echo = procs.container("echo")
    gateway = procs.gateway(
        endpoint_doc("Direct", [container_doc("echo", echo.url)], name="split"), "--variant", "blue"
    )
    client = runtime_client(gateway.url)
    answer = client.invoke_endpoint(
        EndpointName="split", TargetContainerHostname="echo", TargetVariant="blue", Body=b"{}"
    )
    assert answer["InvokedProductionVariant"] == "blue"
    with pytest.raises(client.exceptions.ValidationError, match="Target variant 'green'"):
        client.invoke_endpoint(
            EndpointName="split", TargetContainerHostname="echo", TargetVariant="green", Body=b"{}"
        )
    refused = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "whatever.yaml", "--variant=bad_name"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "is not a variant name" in refused.stderr


def test_resources_come_from_the_document_where_it_says(tmp_path: Path) -> None:
    from gateway.compose import render as render_compose

    document = yaml.safe_load((EXAMPLES / "mnist-direct.yaml").read_text())
    document["Containers"][0]["Backend"]["Resources"] = {"Cpu": "2", "Memory": "3Gi", "CpuLimit": "2500m"}
    document["Containers"][1]["Backend"]["Resources"] = {"MemoryLimit": "1536Mi"}
    path = EXAMPLES / "resources-test.yaml"  # beside the example: its relative paths hold
    path.write_text(yaml.safe_dump(document))
    try:
        pod = yaml.safe_load(rendered(path)["deployment.yaml"])["spec"]["template"]["spec"]
        compose = yaml.safe_load(render_compose(load_endpoint(path), path, tmp_path))
    finally:
        path.unlink()
    resources = {c["name"]: c["resources"] for c in pod["containers"]}
    assert resources["tensorflow-mnist"] == {
        "requests": {"cpu": "2", "memory": "3Gi"},
        "limits": {"memory": "3Gi", "cpu": "2500m"},  # never a limit below the request
    }
    assert resources["pytorch-mnist"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1536Mi"},
    }
    assert resources["triton-mnist"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    limits = {
        name: s["deploy"]["resources"]["limits"]
        for name, s in compose["services"].items()
        if name != "gateway"
    }
    assert limits["tensorflow-mnist"] == {"cpus": "2.5", "memory": "3072m"}
    assert limits["pytorch-mnist"] == {"cpus": "1.0", "memory": "1536m"}


def test_a_limit_below_its_request_is_refused(tmp_path: Path) -> None:
    document = yaml.safe_load((EXAMPLES / "mnist-direct.yaml").read_text())
    document["Containers"][0]["Backend"]["Resources"] = {"Cpu": "ten"}
    document["Containers"][1]["Backend"]["Resources"] = {"Memory": "2Gi", "MemoryLimit": "1Gi"}
    path = tmp_path / "endpoint.yaml"
    path.write_text(yaml.safe_dump(document))
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 1
    said = checked.stdout + checked.stderr
    assert "Containers[0].Backend.Resources.Cpu" in said
    assert "Containers[1].Backend.Resources.MemoryLimit: 1Gi is less than Memory 2Gi" in said
