"""Shadow variants (CreateEndpointConfig's ShadowProductionVariants) through an unmodified boto3: the shadow
gets a copy of its share of the production variant's requests, the client only ever the production
variant's answer; the shadow's failures reach no one but its own metrics; its data capture is under its
own name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import metric, wait_until
from test_data_capture import CAPTURE, captured, side
from test_local_sagemaker import ROLE, LocalSageMaker


def shadowed(sm: Any, name: str, shadow_weight: float, **config: Any) -> None:
    """Production `prod` (the echo container, weight 1) and shadow `shadow` (the streaming container)."""
    for variant, image in (("prod", "test/echo:1"), ("shadow", "test/stream:1")):
        sm.create_model(
            ModelName=f"{name}-{variant}", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image}
        )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "prod", "ModelName": f"{name}-prod", "InitialVariantWeight": 1.0}
        ],
        ShadowProductionVariants=[
            {"VariantName": "shadow", "ModelName": f"{name}-shadow", "InitialVariantWeight": shadow_weight}
        ],
        **config,
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def test_the_shadow_gets_every_copy_and_the_client_only_the_production_answer(
    local_s3: tuple[LocalSageMaker, Any],
) -> None:
    server, _ = local_s3
    sm, runtime = server.sagemaker(), server.runtime()
    shadowed(sm, "mirrored", 1.0)
    described = sm.describe_endpoint(EndpointName="mirrored")
    assert [v["VariantName"] for v in described["ProductionVariants"]] == ["prod"]
    (shadow,) = described["ShadowProductionVariants"]
    assert shadow["VariantName"] == "shadow" and shadow["CurrentWeight"] == 1.0
    assert shadow["DeployedImages"][0]["SpecifiedImage"] == "test/stream:1"
    bodies = [{"tokens": 2}] * 5 + [{"error": 503}] * 3  # the shadow answers the last three with a 503
    for body in bodies:
        answer = runtime.invoke_endpoint(EndpointName="mirrored", Body=json.dumps(body).encode())
        assert answer["InvokedProductionVariant"] == "prod"
        assert json.loads(answer["Body"].read()) == {"container": "echo", "request": body}
    with pytest.raises(ClientError) as refused:  # TargetVariant names production variants only
        runtime.invoke_endpoint(EndpointName="mirrored", TargetVariant="shadow", Body=b"{}")
    assert "not a production variant" in refused.value.response["Error"]["Message"]

    def shadow_count(name: str) -> float:
        return metric(server.url, name, endpoint="mirrored", variant="shadow")

    wait_until(lambda: shadow_count("sagemaker_invocations_total") == len(bodies), "every copy answered", 30)
    assert shadow_count("sagemaker_invocation_5xx_errors_total") == 3
    assert metric(server.url, "sagemaker_invocations_total", endpoint="mirrored", variant="prod") == len(
        bodies
    )


def test_the_share_copied_follows_the_shadow_weight_and_its_capture_is_its_own(
    local_s3: tuple[LocalSageMaker, Any],
) -> None:
    server, bucket = local_s3
    sm, runtime = server.sagemaker(), server.runtime()
    shadowed(sm, "halved", 0.5, DataCaptureConfig={**CAPTURE, "CaptureOptions": [{"CaptureMode": "Input"}]})
    total = 200
    for i in range(total):
        runtime.invoke_endpoint(
            EndpointName="halved", Body=json.dumps({"tokens": 1, "i": i}).encode(), InferenceId=f"r{i}"
        )
    sm.delete_endpoint(EndpointName="halved")  # waits for the copies in flight, then writes the captures
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="halved", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    events = captured(bucket, "halved")
    by_variant: dict[str, set[str]] = {}
    for key, event in events:
        variant = key.split("/")[2]
        by_variant.setdefault(variant, set()).add(event["eventMetadata"]["inferenceId"])
        request = json.loads(side(event["captureData"]["endpointInput"], "INPUT")[1])
        assert event["eventMetadata"]["inferenceId"] == f"r{request['i']}"
    assert len(by_variant["prod"]) == total
    # Binomial(200, 0.5): 100 +- 7; six standard deviations either side
    assert 58 <= len(by_variant["shadow"]) <= 142, len(by_variant["shadow"])
    assert by_variant["shadow"] <= by_variant["prod"]  # copies of production requests, same InferenceId


def test_shadow_variants_are_refused_where_sagemaker_refuses_them(
    local_s3: tuple[LocalSageMaker, Any],
) -> None:
    server, _ = local_s3
    sm = server.sagemaker()
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    variant = {"ModelName": "m", "InitialVariantWeight": 1.0}
    for production, shadows in (
        (
            [{"VariantName": "a", **variant}, {"VariantName": "b", **variant}],
            [{"VariantName": "s", **variant}],
        ),
        ([{"VariantName": "a", **variant}], [{"VariantName": "a", **variant}]),
    ):
        with pytest.raises(ClientError) as refused:
            sm.create_endpoint_config(
                EndpointConfigName="bad", ProductionVariants=production, ShadowProductionVariants=shadows
            )
        assert refused.value.response["Error"]["Code"] == "ValidationException"
