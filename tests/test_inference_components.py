"""Inference components on the local SageMaker, through an unmodified boto3: an endpoint made for them
(its variant names no model), components created from a Container or a ModelName, each its own real
container, invoked by InferenceComponentName, listed, updated blue/green, deleted, brought back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import metric, wait_until
from test_local_sagemaker import ROLE, LocalSageMaker

from gateway.status import local_status

ENDPOINT = "shared"


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalSageMaker]:
    server = LocalSageMaker(tmp_path)
    yield server
    try:
        server.stop()
    finally:
        server.proc.kill()


ROLLING = {
    "RollingUpdatePolicy": {
        "MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
        "WaitIntervalInSeconds": 0,
    }
}


def endpoint_for_components(sm: Any) -> None:
    sm.create_endpoint_config(
        EndpointConfigName=ENDPOINT,
        ExecutionRoleArn=ROLE,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )


def component(sm: Any, name: str, **specification: Any) -> None:
    sm.create_inference_component(
        InferenceComponentName=name,
        EndpointName=ENDPOINT,
        VariantName="AllTraffic",
        Specification={**specification, "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 128}},
        RuntimeConfig={"CopyCount": 1},
    )


def in_service(sm: Any, name: str) -> dict[str, Any]:
    described: dict[str, Any] = {}

    def settled() -> bool:
        described.update(sm.describe_inference_component(InferenceComponentName=name))
        return described["InferenceComponentStatus"] not in ("Creating", "Updating")

    wait_until(settled, f"inference component {name} to settle", timeout=120)
    assert described["InferenceComponentStatus"] == "InService", described.get("FailureReason")
    return described


def answer(runtime: Any, component_name: str | None) -> dict[str, Any]:
    extra = {"InferenceComponentName": component_name} if component_name is not None else {}
    got = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, Body=b'{"hello": 1}', ContentType="application/json", **extra
    )
    body: dict[str, Any] = json.loads(got["Body"].read())
    return body


def test_components_are_created_invoked_listed_updated_and_deleted(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    endpoint_for_components(sm)
    sm.create_model(
        ModelName="french-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/french:1"}
    )
    component(sm, "english", Container={"Image": "test/echo:1", "Environment": {"GREETING": "hello"}})
    component(sm, "french", ModelName="french-model")
    described = in_service(sm, "english")
    assert described["EndpointName"] == ENDPOINT and described["VariantName"] == "AllTraffic"
    assert described["Specification"]["Container"]["DeployedImage"]["SpecifiedImage"] == "test/echo:1"
    assert described["RuntimeConfig"] == {"DesiredCopyCount": 1, "CurrentCopyCount": 1}
    in_service(sm, "french")

    assert answer(runtime, "english")["container"] == "echo"
    assert answer(runtime, "french")["container"] == "french"
    for name, said in ((None, "Inference Component Name header is required"), ("german", "is not deployed")):
        with pytest.raises(ClientError) as refused:
            answer(runtime, name)
        assert refused.value.response["Error"]["Code"] == "ValidationError"
        assert said in refused.value.response["Error"]["Message"]
    # per-component metrics: the component's name is the variant label
    assert (
        metric(local.url, "sagemaker_invocations_total", endpoint=ENDPOINT, variant="english", container="")
        == 1
    )

    shown = local_status(local.url)  # what `mce status` shows: a row per component
    assert shown is not None
    rows = {tuple(line.split()[:3]) for line in shown.splitlines()}
    assert {
        (ENDPOINT, "InService", "AllTraffic/english"),
        (ENDPOINT, "InService", "AllTraffic/french"),
    } <= rows

    listed = sm.list_inference_components(EndpointNameEquals=ENDPOINT, SortBy="Name", SortOrder="Ascending")
    assert [c["InferenceComponentName"] for c in listed["InferenceComponents"]] == ["english", "french"]

    sm.update_inference_component(
        InferenceComponentName="french",
        Specification={
            "Container": {"Image": "test/echo:2"},
            "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 128},
        },
        RuntimeConfig={"CopyCount": 1},
        DeploymentConfig=ROLLING,
    )
    described = in_service(sm, "french")
    assert answer(runtime, "french")["container"] == "echo"
    assert described["LastDeploymentConfig"] == ROLLING
    members = set(sm.meta.service_model.operation_model("DescribeInferenceComponent").output_shape.members)
    assert set(described) - {"ResponseMetadata"} <= members

    with pytest.raises(ClientError) as busy:
        sm.delete_endpoint(EndpointName=ENDPOINT)
    assert "delete them first" in busy.value.response["Error"]["Message"]
    for name in ("english", "french"):
        sm.delete_inference_component(InferenceComponentName=name)
    wait_until(lambda: not sm.list_inference_components()["InferenceComponents"], "the components to go", 60)
    with pytest.raises(ClientError) as gone:
        answer(runtime, "english")
    assert "is not deployed" in gone.value.response["Error"]["Message"]
    sm.delete_endpoint(EndpointName=ENDPOINT)


def test_a_component_that_cannot_start_fails_with_its_reason(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    endpoint_for_components(sm)
    component(sm, "broken", Container={"Image": "test/broken:1"})
    described = sm.describe_inference_component(InferenceComponentName="broken")
    assert described["InferenceComponentStatus"] == "Failed"
    assert "cannot find /opt/ml/model/weights.bin" in described["FailureReason"]


def test_components_need_an_endpoint_made_for_them(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    sm.create_model(ModelName="plain", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    sm.create_endpoint_config(
        EndpointConfigName="plain", ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "plain"}]
    )
    sm.create_endpoint(EndpointName="plain", EndpointConfigName="plain")
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="plain", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    with pytest.raises(ClientError) as refused:
        sm.create_inference_component(
            InferenceComponentName="extra",
            EndpointName="plain",
            Specification={
                "Container": {"Image": "test/echo:1"},
                "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 128},
            },
            RuntimeConfig={"CopyCount": 1},
        )
    assert "serves models" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as not_allowed:
        runtime.invoke_endpoint(EndpointName="plain", Body=b"{}", InferenceComponentName="extra")
    assert "Inference Component Name header is not allowed" in not_allowed.value.response["Error"]["Message"]


def test_components_come_back_when_mce_up_starts_again(tmp_path: Path) -> None:
    first = LocalSageMaker(tmp_path)
    try:
        sm = first.sagemaker()
        endpoint_for_components(sm)
        component(sm, "english", Container={"Image": "test/echo:1"})
        in_service(sm, "english")
    finally:
        assert first.stop() == 0
    second = LocalSageMaker(tmp_path, first.state)
    try:
        sm, runtime = second.sagemaker(), second.runtime()
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        in_service(sm, "english")
        assert answer(runtime, "english")["container"] == "echo"
    finally:
        assert second.stop() == 0
