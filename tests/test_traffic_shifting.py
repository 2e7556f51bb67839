"""UpdateEndpoint's DeploymentConfig through an unmodified boto3: a blue/green update moves requests to the
new fleet in the steps its BlueGreenUpdatePolicy (or RollingUpdatePolicy) asks, counted by which container
answers; what cannot be had here (CloudWatch alarms) and what SageMaker refuses are refused."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import wait_until
from test_local_sagemaker import ROLE, LocalSageMaker


def share(url: str, endpoint: str) -> float | None:
    """mce_update_new_fleet_share for `endpoint`: None when no update is shifting its traffic."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("mce_update_new_fleet_share{") and f'endpoint="{endpoint}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return None


def blue_then_green(sm: Any, name: str) -> None:
    """Endpoint `name` on the echo container (blue), and a second configuration on the french one (green)."""
    for colour, image in (("blue", "test/echo:1"), ("green", "test/french:1")):
        sm.create_model(
            ModelName=f"{name}-{colour}", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image}
        )
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-{colour}",
            ProductionVariants=[
                {"VariantName": "AllTraffic", "ModelName": f"{name}-{colour}", "InitialInstanceCount": 4}
            ],
        )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-blue")
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def answered_by(runtime: Any, name: str) -> str:
    container: str = json.loads(runtime.invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read())[
        "container"
    ]
    return container


def blue_green(routing: dict[str, Any], **policy: Any) -> dict[str, Any]:
    return {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, **policy}}


def test_a_canary_gets_its_share_then_everything(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm, runtime = local.sagemaker(), local.runtime()
        blue_then_green(sm, "canaried")
        canary = {
            "Type": "CANARY",
            "WaitIntervalInSeconds": 10,
            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
        }
        sm.update_endpoint(
            EndpointName="canaried", EndpointConfigName="canaried-green", DeploymentConfig=blue_green(canary)
        )
        wait_until(lambda: share(local.url, "canaried") == 0.25, "the canary step (1 instance of 4)", 60)
        total = 200
        green = sum(answered_by(runtime, "canaried") == "french" for _ in range(total))
        assert share(local.url, "canaried") == 0.25, (
            "the requests outlasted the canary step: counts mean nothing"
        )
        # Binomial(200, 0.25): 50 +- 6.1; six standard deviations either side
        assert 13 <= green <= 87, green
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="canaried", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        described = sm.describe_endpoint(EndpointName="canaried")
        assert described["EndpointConfigName"] == "canaried-green"
        assert described["LastDeploymentConfig"] == blue_green(canary)
        assert share(local.url, "canaried") is None
        assert {answered_by(runtime, "canaried") for _ in range(20)} == {"french"}


def test_linear_steps_and_a_rolling_update_move_traffic_in_turn(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm, runtime = local.sagemaker(), local.runtime()
        blue_then_green(sm, "stepped")
        linear = {
            "Type": "LINEAR",
            "WaitIntervalInSeconds": 2,
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 34},
        }
        sm.update_endpoint(
            EndpointName="stepped", EndpointConfigName="stepped-green", DeploymentConfig=blue_green(linear)
        )
        seen: list[float] = []

        def shifted() -> bool:
            """Each share the new fleet had, in turn; True once it has them all (no shift left)."""
            current = share(local.url, "stepped")
            if current is not None and (not seen or seen[-1] != current):
                seen.append(current)
            return bool(seen) and current is None

        def in_service() -> None:
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName="stepped", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )

        wait_until(shifted, "the linear update to move every request", 60)
        in_service()
        assert seen == [0.34, 0.68], seen
        assert answered_by(runtime, "stepped") == "french"

        rolling = {"MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 2}, "WaitIntervalInSeconds": 2}
        sm.update_endpoint(
            EndpointName="stepped",
            EndpointConfigName="stepped-blue",
            DeploymentConfig={"RollingUpdatePolicy": rolling},
        )
        seen.clear()
        wait_until(shifted, "the rolling update to move every request", 60)
        in_service()
        assert seen == [0.5], seen  # two batches of 2 instances of 4
        assert answered_by(runtime, "stepped") == "echo"


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            {
                **blue_green({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}),
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "latency"}]},
            },
            "CloudWatch alarms",
        ),
        (
            blue_green(
                {
                    "Type": "CANARY",
                    "WaitIntervalInSeconds": 1,
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 60},
                }
            ),
            "less than or equal to 50%",
        ),
        (
            blue_green(
                {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}, MaximumExecutionTimeoutInSeconds=600
            ),
            "must be larger than the total waiting time",
        ),
    ],
)
def test_what_cannot_shift_here_is_refused(tmp_path: Path, config: dict[str, Any], words: str) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm = local.sagemaker()
        blue_then_green(sm, "kept")
        with pytest.raises(ClientError) as refused:
            sm.update_endpoint(EndpointName="kept", EndpointConfigName="kept-green", DeploymentConfig=config)
        error = refused.value.response["Error"]
        assert error["Code"] == "ValidationException" and words in error["Message"], error
        assert sm.describe_endpoint(EndpointName="kept")["EndpointConfigName"] == "kept-blue"


def test_deleting_an_endpoint_midway_through_a_shift_stops_both_fleets(tmp_path: Path) -> None:
    from test_leftovers import children

    with LocalSageMaker(tmp_path) as local:
        sm = local.sagemaker()
        blue_then_green(sm, "halfway")
        canary = {
            "Type": "CANARY",
            "WaitIntervalInSeconds": 600,
            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 2},
        }
        sm.update_endpoint(
            EndpointName="halfway", EndpointConfigName="halfway-green", DeploymentConfig=blue_green(canary)
        )
        wait_until(lambda: share(local.url, "halfway") == 0.5, "the canary step, both fleets running", 60)
        assert len(children(local.proc.popen.pid)) == 2
        sm.delete_endpoint(EndpointName="halfway")
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName="halfway", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        assert children(local.proc.popen.pid) == {}
