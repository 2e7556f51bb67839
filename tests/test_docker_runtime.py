"""The local SageMaker's Docker runtime against a real engine: an image the image map does not know runs
under Docker as SageMaker runs it (`serve`, its environment, /opt/ml/model, a port on loopback only) and
is removed with its endpoint. The test container (tests/containers/docker) reports what it was given."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import (
    HERE,
    ROOT,
    build_image,
    containers_labelled,
    docker,
    require_docker,
    runtime_client,
    s3_environment,
    start_process,
    wait_until,
    write_artifact,
)
from test_local_sagemaker import ROLE, LocalSageMaker

PROBE = "mce-test/probe:1"
# the seed notebook's container, under a tag as ECR gives it (the built-in image map does not know it)
NOTEBOOK = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mce-test-multi-model:1"
UNLABELLED = "mce-test/probe:unlabelled"  # without the label a multi-container endpoint requires
RUN_DIR_LABEL = "io.mce-gateway.run-dir"


@pytest.fixture(scope="module", autouse=True)
def images() -> Iterator[None]:
    require_docker()
    context = HERE / "containers" / "docker"
    build_image(PROBE, context)
    build_image(UNLABELLED, context, BIND_TO_PORT="false")
    yield
    docker("rmi", PROBE, UNLABELLED, check=False)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalSageMaker]:
    server = LocalSageMaker(tmp_path)
    yield server
    try:
        server.stop()
    finally:
        server.proc.kill()
    left = [c["Name"] for c in containers_labelled(RUN_DIR_LABEL) if str(tmp_path) in json.dumps(c)]
    assert not left, f"containers left running: {left}"


def ours(state: Path) -> list[dict[str, Any]]:
    """The Docker containers of endpoints kept in `state`."""
    root = str(state.resolve())
    return [
        c for c in containers_labelled(RUN_DIR_LABEL) if c["Config"]["Labels"][RUN_DIR_LABEL].startswith(root)
    ]


def create(sm: Any, name: str, **model: Any) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, **model)
    sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}]
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def in_service(sm: Any, name: str) -> None:
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )


def seen(runtime: Any, name: str, **call: Any) -> dict[str, Any]:
    answer = runtime.invoke_endpoint(EndpointName=name, Body=b"{}", ContentType="application/json", **call)
    got: dict[str, Any] = json.loads(answer["Body"].read())
    return got


def test_an_image_only_docker_has_runs_as_sagemaker_runs_it(local: LocalSageMaker, tmp_path: Path) -> None:
    archive = write_artifact(tmp_path / "model.tar.gz", {"answer.txt": "unpacked into /opt/ml/model"})
    sm, runtime = local.sagemaker(), local.runtime()
    create(
        sm,
        "probe",
        PrimaryContainer={
            "Image": PROBE,
            "ModelDataUrl": f"file://{archive}",
            "Environment": {"PROBE_COLOUR": "blue"},
        },
    )
    in_service(sm, "probe")
    got = seen(runtime, "probe")
    assert got["argv"] == ["serve"]
    assert got["env"] == {"PROBE_COLOUR": "blue"}  # one container: no SAGEMAKER_BIND_TO_PORT, port 8080
    assert got["answer"] == "unpacked into /opt/ml/model"
    assert got["model_writable"] is False
    [container] = ours(local.state)
    published = container["HostConfig"]["PortBindings"]
    assert [b["HostIp"] for bindings in published.values() for b in bindings] == ["127.0.0.1"]
    assert (
        sm.describe_endpoint(EndpointName="probe")["ProductionVariants"][0]["DeployedImages"][0][
            "SpecifiedImage"
        ]
        == PROBE
    )

    sm.delete_endpoint(EndpointName="probe")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="probe", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert ours(local.state) == []


def test_a_serverless_variants_memory_size_is_its_docker_containers_memory_limit(
    local: LocalSageMaker,
) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    sm.create_model(ModelName="small", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": PROBE})
    serverless = {"MemorySizeInMB": 2048, "MaxConcurrency": 1}
    sm.create_endpoint_config(
        EndpointConfigName="small",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "small", "ServerlessConfig": serverless}
        ],
    )
    sm.create_endpoint(EndpointName="small", EndpointConfigName="small")
    in_service(sm, "small")
    assert seen(runtime, "small")["argv"] == ["serve"]
    [container] = ours(local.state)
    assert container["HostConfig"]["Memory"] == 2048 * 2**20


def test_a_direct_endpoint_of_docker_containers_gives_each_its_port(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    create(
        sm,
        "pair",
        Containers=[
            {"ContainerHostname": "left", "Image": PROBE, "Environment": {"PROBE_SIDE": "left"}},
            {"ContainerHostname": "right", "Image": PROBE, "Environment": {"PROBE_SIDE": "right"}},
        ],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    in_service(sm, "pair")
    ports = set()
    for side in ("left", "right"):
        got = seen(runtime, "pair", TargetContainerHostname=side)
        assert got["hostname"] == side and got["env"]["PROBE_SIDE"] == side
        first, last = map(int, got["env"]["SAGEMAKER_SAFE_PORT_RANGE"].split("-"))
        assert first <= last
        ports.add(got["env"]["SAGEMAKER_BIND_TO_PORT"])
    assert len(ports) == 2
    assert len(ours(local.state)) == 2

    create(
        sm,
        "unlabelled",
        Containers=[
            {"ContainerHostname": "a", "Image": PROBE},
            {"ContainerHostname": "b", "Image": UNLABELLED},
        ],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    described = sm.describe_endpoint(EndpointName="unlabelled")
    assert described["EndpointStatus"] == "Failed"
    assert (
        f"Your Ecr Image {UNLABELLED} does not contain required "
        "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true Docker label(s)."
    ) in described["FailureReason"]
    assert len(ours(local.state)) == 2  # the failed endpoint left nothing running


def test_a_docker_container_that_dies_is_restarted(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    create(sm, "mortal", PrimaryContainer={"Image": PROBE})
    in_service(sm, "mortal")
    [before] = ours(local.state)
    with pytest.raises(ClientError) as died:
        runtime.invoke_endpoint(EndpointName="mortal", Body=b"exit")
    assert died.value.response["Error"]["Code"] == "ModelError"

    def answers() -> bool:
        try:
            seen(runtime, "mortal")
        except ClientError:
            return False
        return True

    wait_until(answers, "the restarted container answers", timeout=60)
    [after] = ours(local.state)
    assert after["Id"] != before["Id"]


def test_what_a_killed_mce_left_running_is_removed_when_it_starts_again(tmp_path: Path) -> None:
    first = LocalSageMaker(tmp_path)
    try:
        sm = first.sagemaker()
        create(sm, "survivor", PrimaryContainer={"Image": PROBE})
        in_service(sm, "survivor")
    finally:
        first.proc.popen.send_signal(signal.SIGKILL)  # no chance to stop its containers
        first.proc.popen.wait()
    [orphan] = ours(first.state)
    second = LocalSageMaker(tmp_path, first.state)
    try:
        sm, runtime = second.sagemaker(), second.runtime()
        in_service(sm, "survivor")
        assert seen(runtime, "survivor")["argv"] == ["serve"]
        [running] = ours(first.state)
        assert running["Id"] != orphan["Id"]
    finally:
        assert second.stop() == 0
    assert ours(first.state) == []


def test_an_endpoint_document_can_name_the_docker_runtime(tmp_path: Path) -> None:
    document = tmp_path / "endpoint.yaml"
    document.write_text(
        json.dumps(
            {
                "EndpointName": "documented",
                "PrimaryContainer": {
                    "Image": PROBE,
                    "Environment": {"PROBE_FROM": "document"},
                    "Backend": {"Launch": {"Runtime": "docker", "Command": ["serve", "--verbose"]}},
                },
            }
        )
    )
    state = tmp_path / "state"
    mce = start_process(
        [sys.executable, "-m", "gateway", "up", str(document), "--port", "0", "--state", str(state)],
        stderr=tmp_path / "mce.log",
    )
    try:
        runtime = runtime_client(mce.url)
        got = seen(runtime, "documented")
        runtime.close()
        assert got["argv"] == ["serve", "--verbose"] and got["env"] == {"PROBE_FROM": "document"}
    finally:
        assert mce.terminate(timeout=60) == 0
    assert ours(state) == []


def test_the_seed_notebooks_multi_model_container_under_docker(tmp_path: Path, s3: tuple[str, Any]) -> None:
    """The project's multi-model Dockerfile built under an ECR-style tag, deployed through boto3 with Mode
    MultiModel and a prefix in a local S3; the gateway loads each TargetModel into the container."""
    build_image(NOTEBOOK, ROOT, ROOT / "containers" / "multi-model" / "Dockerfile")
    models = tmp_path / "models"
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "multi-model" / "build_model.py"), "--out", str(models)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    url, bucket = s3
    for name in ("digits-logreg.tar.gz", "digits-mlp.tar.gz"):
        bucket.upload_file(str(models / "models" / name), "models", f"notebook/{name}")
    env = s3_environment(url)
    local = LocalSageMaker(tmp_path, env=env)
    try:
        sm, runtime = local.sagemaker(), local.runtime()
        create(
            sm,
            "notebook",
            PrimaryContainer={
                "Image": NOTEBOOK,
                "Mode": "MultiModel",
                "ModelDataUrl": "s3://models/notebook/",
            },
        )
        in_service(sm, "notebook")
        [container] = ours(local.state)
        assert container["Config"]["Image"] == NOTEBOOK
        assert "SAGEMAKER_MULTI_MODEL=true" in container["Config"]["Env"]
        row = json.dumps({"inputs": [[0.0] * 64]})
        for model in ("digits-logreg.tar.gz", "digits-mlp.tar.gz", "digits-logreg.tar.gz"):
            answer = runtime.invoke_endpoint(
                EndpointName="notebook", TargetModel=model, ContentType="application/json", Body=row
            )
            assert len(json.loads(answer["Body"].read())["predictions"][0]) == 10, model
        with pytest.raises(ClientError) as missing:
            runtime.invoke_endpoint(EndpointName="notebook", TargetModel="absent.tar.gz", Body=row)
        assert missing.value.response["Error"]["Code"] == "ValidationError"
        sm.delete_endpoint(EndpointName="notebook")
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName="notebook", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        assert ours(local.state) == []
    finally:
        assert local.stop() == 0
    docker("rmi", NOTEBOOK, check=False)


def test_a_docker_container_gets_a_copy_of_local_model_data_and_isolation_cuts_its_network(
    local: LocalSageMaker, tmp_path: Path
) -> None:
    """Issue 27: a local ModelDataUrl folder is copied, not mounted (the host folder changing later is not
    seen), and EnableNetworkIsolation runs the container on an internal network, as SageMaker isolates it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "answer.txt").write_text("as deployed")
    sm, runtime = local.sagemaker(), local.runtime()
    create(sm, "open", PrimaryContainer={"Image": PROBE, "ModelDataUrl": str(folder)})
    sm.create_model(
        ModelName="closed",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PROBE, "ModelDataUrl": str(folder)},
        EnableNetworkIsolation=True,
    )
    sm.create_endpoint_config(
        EndpointConfigName="closed", ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "closed"}]
    )
    sm.create_endpoint(EndpointName="closed", EndpointConfigName="closed")
    in_service(sm, "open")
    in_service(sm, "closed")
    (folder / "answer.txt").write_text("changed on the host afterwards")
    opened, closed = seen(runtime, "open"), seen(runtime, "closed")
    assert opened["answer"] == closed["answer"] == "as deployed"
    networks = sorted(name for c in ours(local.state) for name in c["NetworkSettings"]["Networks"])
    assert networks == ["bridge", "mce-isolated"], networks
    # an internal network: Docker routes nothing beyond it (its firewall rules do, where the engine
    # manages them: not on machines started with --iptables=false, like this project's CI)
    internal = docker("network", "inspect", "--format", "{{.Internal}}", "mce-isolated").stdout.strip()
    assert internal == "true"
