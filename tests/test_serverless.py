"""Serverless variants (ProductionVariant.ServerlessConfig) through an unmodified boto3: MaxConcurrency
enforced with ThrottlingException, containers stopped after `mce up --serverless-idle` seconds without an
invocation and started again by the next one (a cold start), ProvisionedConcurrency keeping them warm."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import metric, wait_until
from test_local_sagemaker import ROLE, LocalSageMaker


def serverless(sm: Any, name: str, image: str, **config: int) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2, **config},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def states(url: str, endpoint: str) -> list[str]:
    """Each container's state as the console shows it."""
    with urllib.request.urlopen(f"{url}/console/containers?endpoint={endpoint}", timeout=10) as answer:
        return [container["state"] for container in json.load(answer)["containers"]]


def warm(url: str, endpoint: str) -> float:
    return metric(url, "mce_serverless_warm", endpoint=endpoint, variant="AllTraffic")


def test_past_max_concurrency_an_invocation_is_throttled(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm, runtime = local.sagemaker(), local.runtime()
        serverless(sm, "narrow", "test/stream:1")
        described = sm.describe_endpoint(EndpointName="narrow")["ProductionVariants"][0]
        assert described["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
        gate = tmp_path / "open"
        held = [
            runtime.invoke_endpoint_with_response_stream(
                EndpointName="narrow", Body=json.dumps({"tokens": 2, "gate": str(gate)}).encode()
            )
            for _ in range(2)
        ]  # each answer has begun (its first line) and waits for the gate: two invocations running
        with pytest.raises(ClientError) as throttled:
            runtime.invoke_endpoint(EndpointName="narrow", Body=json.dumps({"tokens": 1}).encode())
        error = throttled.value.response
        assert error["Error"]["Code"] == "ThrottlingException", error
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert "MaxConcurrency of 2" in error["Error"]["Message"]
        gate.touch()
        for answer in held:
            lines = b"".join(event["PayloadPart"]["Bytes"] for event in answer["Body"])
            assert [json.loads(line)["token"] for line in lines.splitlines()] == [0, 1]
        answer = runtime.invoke_endpoint(EndpointName="narrow", Body=json.dumps({"tokens": 1}).encode())
        assert json.loads(answer["Body"].read()) == {"token": 0}
        # a throttling code is one botocore retries: every attempt it made was refused and counted
        attempts = error["ResponseMetadata"]["RetryAttempts"] + 1
        assert metric(local.url, "mce_serverless_throttled_total", endpoint="narrow") == attempts


def test_an_idle_variant_scales_to_zero_and_the_next_invocation_starts_it(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path, None, None, "--serverless-idle", "1") as local:
        sm, runtime = local.sagemaker(), local.runtime()
        serverless(sm, "kept", "test/echo:1", ProvisionedConcurrency=1)
        serverless(sm, "napping", "test/echo:1")
        for name in ("kept", "napping"):  # "kept" first: its timer, had it one, would run out first
            assert json.loads(runtime.invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read())
        wait_until(lambda: warm(local.url, "napping") == 0, "the idle variant to stop", 30)
        wait_until(lambda: states(local.url, "napping") == ["idle"], "its container to be stopped", 30)
        assert warm(local.url, "kept") == 1 and states(local.url, "kept") == [
            "ready"
        ]  # ProvisionedConcurrency

        answer = runtime.invoke_endpoint(
            EndpointName="napping", Body=b'{"cold": true}'
        )  # waits for the start
        assert json.loads(answer["Body"].read()) == {"container": "echo", "request": {"cold": True}}
        assert metric(local.url, "mce_serverless_cold_starts_total", endpoint="napping") == 1
        assert warm(local.url, "napping") == 1 and states(local.url, "napping") == ["ready"]
        log = next((local.state / "napping").rglob("deployment.log")).read_text()
        assert "idle: containers stopped" in log and "cold start: every container healthy" in log
