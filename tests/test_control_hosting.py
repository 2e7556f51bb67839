"""The hosting operations a deploy script calls next, through an unmodified boto3 against `mce up`: tags,
UpdateEndpointWeightsAndCapacities, every member DescribeEndpoint's configuration determines, what an
update reports while it runs, --describe-hold, and names matched as the runtime matches them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import test_local_sagemaker
from botocore.exceptions import ClientError
from conftest import ROOT, write_artifact
from test_local_sagemaker import ROLE, LocalSageMaker, deploy, in_service, second_config

from gateway.launch.modeldata import model_directory

local = test_local_sagemaker.local  # the fixture: a local SageMaker for the test

ARN_PREFIX = "arn:aws:sagemaker:us-east-1:000000000000"


def containers_of(answer: dict[str, Any]) -> list[str]:
    return [json.loads(answer["Body"].read())["container"]]


def serving(runtime: Any, name: str, calls: int = 20) -> set[str]:
    """Which containers answer `calls` invocations of endpoint `name`."""
    seen: set[str] = set()
    for _ in range(calls):
        seen.update(containers_of(runtime.invoke_endpoint(EndpointName=name, Body=b"{}")))
    return seen


def test_tags_on_every_kind_from_create_and_the_tag_operations(local: LocalSageMaker) -> None:
    """Tags given to Create* are read back with ListTags; AddTags adds and overwrites, DeleteTags removes,
    ListTags pages; a deleted resource's tags go with it."""
    sm = local.sagemaker()
    tags = [{"Key": "team", "Value": "search"}, {"Key": "cost-center", "Value": "42"}]
    sm.create_model(
        ModelName="tagged", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"}, Tags=tags
    )
    sm.create_endpoint_config(
        EndpointConfigName="tagged",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "tagged", "InitialInstanceCount": 1}],
        Tags=tags[:1],
    )
    sm.create_endpoint(EndpointName="tagged", EndpointConfigName="tagged", Tags=tags[1:])
    for kind, expected in (("model", tags), ("endpoint-config", tags[:1]), ("endpoint", tags[1:])):
        assert sm.list_tags(ResourceArn=f"{ARN_PREFIX}:{kind}/tagged")["Tags"] == expected, kind

    arn = sm.describe_endpoint_config(EndpointConfigName="tagged")["EndpointConfigArn"]
    added = [{"Key": f"k{n:02d}", "Value": str(n)} for n in range(60 - 1)]
    with pytest.raises(ClientError) as too_many:  # 1 + 59 tags: more than a resource may have
        sm.add_tags(ResourceArn=arn, Tags=added)
    assert too_many.value.response["Error"]["Code"] == "ValidationException"
    assert sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "ads"}, *added[:49]])["Tags"][0] == {
        "Key": "team",
        "Value": "ads",
    }
    first = sm.list_tags(ResourceArn=arn)  # 50 tags: one page of 50, SageMaker's default
    assert len(first["Tags"]) == 50 and "NextToken" not in first
    pages = list(sm.get_paginator("list_tags").paginate(ResourceArn=arn, PaginationConfig={"PageSize": 50}))
    assert sum(len(page["Tags"]) for page in pages) == 50
    assert first["Tags"][0] == {"Key": "team", "Value": "ads"}  # overwritten in place

    sm.delete_tags(ResourceArn=arn, TagKeys=["team", "k00", "no-such-key"])
    keys = [tag["Key"] for tag in sm.list_tags(ResourceArn=arn)["Tags"]]
    assert "team" not in keys and "k00" not in keys and len(keys) == 48

    sm.delete_endpoint_config(EndpointConfigName="tagged")
    with pytest.raises(ClientError) as gone:
        sm.list_tags(ResourceArn=arn)
    assert gone.value.response["Error"]["Code"] == "ValidationException"
    sm.create_endpoint_config(
        EndpointConfigName="tagged",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "tagged", "InitialInstanceCount": 1}],
    )
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []  # a new resource of the same name starts bare
    with pytest.raises(ClientError) as elsewhere:
        sm.list_tags(ResourceArn="arn:aws:sagemaker:eu-west-1:000000000000:model/tagged")
    assert "Could not find resource" in elsewhere.value.response["Error"]["Message"]


def test_traffic_follows_new_weights_at_once(local: LocalSageMaker) -> None:
    """UpdateEndpointWeightsAndCapacities: the answer comes while the endpoint is Updating; requests follow
    the new DesiredWeight from then on; DescribeEndpoint reports the new weights, InService."""
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "shift", ("Blue", "test/echo:1", 1.0), ("Green", "test/french:1", 0.0))
    in_service(sm, "shift")
    assert serving(runtime, "shift") == {"echo"}
    sm.update_endpoint_weights_and_capacities(
        EndpointName="shift",
        DesiredWeightsAndCapacities=[
            {"VariantName": "Blue", "DesiredWeight": 0.0},
            {"VariantName": "Green", "DesiredWeight": 1.0},
        ],
    )
    assert serving(runtime, "shift") == {"french"}
    described = in_service(sm, "shift")
    weights = {
        v["VariantName"]: (v["CurrentWeight"], v["DesiredWeight"]) for v in described["ProductionVariants"]
    }
    assert weights == {"Blue": (0.0, 0.0), "Green": (1.0, 1.0)}
    with pytest.raises(ClientError) as unknown:
        sm.update_endpoint_weights_and_capacities(
            EndpointName="shift", DesiredWeightsAndCapacities=[{"VariantName": "Red", "DesiredWeight": 1.0}]
        )
    assert "has no production variant Red" in unknown.value.response["Error"]["Message"]
    # RetainAllVariantProperties keeps the weights set since, through an update
    second = second_config(sm, "shift", "test/echo:2")
    sm.update_endpoint(EndpointName="shift", EndpointConfigName=second, RetainAllVariantProperties=True)
    described = in_service(sm, "shift")
    assert [(v["VariantName"], v["DesiredWeight"]) for v in described["ProductionVariants"]] == [
        ("AllTraffic", 1.0)
    ]


def test_describe_endpoint_returns_every_member_its_configuration_determines(
    local: LocalSageMaker, tmp_path: Path
) -> None:
    """Every member of DescribeEndpointOutput that the configuration, the update and the state determine
    is in the answer, checked against botocore's output shape; a serverless variant reports its
    ServerlessConfig, not an instance count."""
    sm = local.sagemaker()
    sm.create_model(ModelName="full", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 50,
        "DestinationS3Uri": "s3://capture/full",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }
    asynchronous = {"OutputConfig": {"S3OutputPath": "s3://async/out"}}
    serverless = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    sm.create_endpoint_config(
        EndpointConfigName="full",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "full", "ServerlessConfig": serverless}
        ],
        DataCaptureConfig=capture,
        AsyncInferenceConfig=asynchronous,
    )
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
        }
    }
    sm.create_endpoint(EndpointName="full", EndpointConfigName="full", DeploymentConfig=deployment)
    described = in_service(sm, "full")
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("DescribeEndpointOutput")
    determined = {
        "EndpointName",
        "EndpointArn",
        "EndpointConfigName",
        "ProductionVariants",
        "DataCaptureConfig",
        "EndpointStatus",
        "CreationTime",
        "LastModifiedTime",
        "LastDeploymentConfig",
        "AsyncInferenceConfig",
    }
    answered = set(described) - {"ResponseMetadata"}
    assert answered == determined and answered <= set(shape.members), answered ^ determined
    assert described["DataCaptureConfig"] == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 50,
        "DestinationS3Uri": "s3://capture/full",
    }
    assert described["AsyncInferenceConfig"] == asynchronous
    assert described["LastDeploymentConfig"] == deployment
    (variant,) = described["ProductionVariants"]
    assert variant["CurrentServerlessConfig"] == variant["DesiredServerlessConfig"] == serverless
    assert "CurrentInstanceCount" not in variant and "DesiredInstanceCount" not in variant


def test_describe_model_and_configuration_give_back_what_was_configured(local: LocalSageMaker) -> None:
    """DescribeModel and DescribeEndpointConfig: every member of their output shapes that the Create
    request set, as it was set (Tags excepted: ListTags reads them)."""
    sm = local.sagemaker()
    model = {
        "PrimaryContainer": {"Image": "test/echo:1", "Environment": {"A": "1"}},
        "ExecutionRoleArn": ROLE,
        "VpcConfig": {"SecurityGroupIds": ["sg-0123"], "Subnets": ["subnet-0123"]},
        "EnableNetworkIsolation": False,
    }
    sm.create_model(ModelName="echoed", Tags=[{"Key": "a", "Value": "b"}], **model)
    described = sm.describe_model(ModelName="echoed")
    assert set(described) - {"ResponseMetadata"} == {*model, "ModelName", "ModelArn", "CreationTime"}
    assert {key: described[key] for key in model} == model
    config = {
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "echoed",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
        "KmsKeyId": "alias/local",
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://async/out"}},
        "EnableNetworkIsolation": False,
    }
    sm.create_endpoint_config(EndpointConfigName="echoed", **config)
    described = sm.describe_endpoint_config(EndpointConfigName="echoed")
    expected = {*config, "EndpointConfigName", "EndpointConfigArn", "CreationTime"}
    assert set(described) - {"ResponseMetadata"} == expected
    assert {key: described[key] for key in config} == config


def test_an_update_reports_what_it_moves_to(tmp_path: Path) -> None:
    """With --describe-hold 0 DescribeEndpoint answers at once, as SageMaker does: Creating, then during an
    update Updating with a PendingDeploymentSummary of the configuration it moves to; the waiter still
    ends InService."""
    with LocalSageMaker(tmp_path, None, None, "--describe-hold", "0") as local:
        sm = local.sagemaker()
        deploy(sm, "held", ("AllTraffic", "test/gated:1", 1.0))
        assert sm.describe_endpoint(EndpointName="held")["EndpointStatus"] == "Creating"
        (tmp_path / "gate").touch()
        in_service(sm, "held")
        (tmp_path / "gate").unlink()  # the next gated container waits until the test lets it up
        sm.create_model(
            ModelName="held-next", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/gated:2"}
        )
        sm.create_endpoint_config(
            EndpointConfigName="held-next",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "held-next",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sm.update_endpoint(EndpointName="held", EndpointConfigName="held-next")
        described = sm.describe_endpoint(EndpointName="held")
        assert described["EndpointStatus"] == "Updating" and described["EndpointConfigName"] == "held-config"
        pending = described["PendingDeploymentSummary"]
        assert pending["EndpointConfigName"] == "held-next" and "StartTime" in pending
        assert [
            (v["VariantName"], v["InstanceType"], v["DesiredWeight"]) for v in pending["ProductionVariants"]
        ] == [("AllTraffic", "ml.m5.large", 1.0)]
        (tmp_path / "gate").touch()
        described = in_service(sm, "held")
        assert described["EndpointConfigName"] == "held-next" and "PendingDeploymentSummary" not in described


def test_names_are_matched_as_the_runtime_matches_them(local: LocalSageMaker) -> None:
    """Invoking `case-b` when the endpoint is `Case-B` is not found (the runtime matches names exactly),
    while the control plane, whose names are unique regardless of case, finds it."""
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "Case-B", ("AllTraffic", "test/echo:1", 1.0))
    in_service(sm, "Case-B")
    assert sm.describe_endpoint(EndpointName="case-b")["EndpointName"] == "Case-B"
    assert serving(runtime, "Case-B", 1) == {"echo"}
    with pytest.raises(ClientError) as wrong_case:
        runtime.invoke_endpoint(EndpointName="case-b", Body=b"{}")
    error = wrong_case.value.response["Error"]
    assert error["Code"] == "ValidationError" and "InService" not in error["Message"], error


def test_a_model_name_is_refused_in_the_apis_words(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    with pytest.raises(ClientError) as refused:
        sm.create_model(ModelName="x" * 64, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    message = refused.value.response["Error"]["Message"]
    assert "at 'modelName'" in message and "stem" not in message, message


def test_an_earlier_state_file_is_migrated(tmp_path: Path) -> None:
    """A state file written by the previous mce (its endpoint's `deployed` in the old form) comes back:
    the endpoint is created again from what it ran."""
    state = tmp_path / "state"
    first = LocalSageMaker(tmp_path, state)
    try:
        sm = first.sagemaker()
        deploy(sm, "kept", ("AllTraffic", "test/echo:1", 1.0))
        in_service(sm, "kept")
    finally:
        assert first.stop() == 0
    db = sqlite3.connect(state / "mce.db")
    ((deployed,),) = db.execute("SELECT deployed FROM resources WHERE kind = 'endpoint'").fetchall()
    new = json.loads(deployed)
    old = {"config": {**new["request"], "EndpointConfigName": new["config"]}, "models": new["models"]}
    db.execute("UPDATE resources SET deployed = ?, config = ?", (json.dumps(old), new["config"]))
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    second = LocalSageMaker(tmp_path, state)
    try:
        described = in_service(second.sagemaker(), "kept")
        assert described["EndpointConfigName"] == "kept-config"
        assert serving(second.runtime(), "kept", 1) == {"echo"}
    finally:
        assert second.stop() == 0


def test_the_model_folder_holds_only_the_archives_files(tmp_path: Path) -> None:
    """mce's note of what it extracted sits beside /opt/ml/model's folder, not in it: a container that
    loads every file it finds there sees the archive's files only. Extracting again reuses it."""
    archive = write_artifact(tmp_path / "model.tar.gz", {"weights.json": "{}"})
    folder = model_directory(str(archive), tmp_path, tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == ["weights.json"]
    (folder / "weights.json").write_text("changed by the container")
    assert model_directory(str(archive), tmp_path, tmp_path / "run") == folder
    assert (folder / "weights.json").read_text() == "changed by the container"  # not extracted again


SDK_PYTHON = ROOT / ".venv" / "sdk" / "bin" / "python"  # the SageMaker Python SDK v2's own venv (.ci/setup)
SDK_UPDATE = """
import sys
import boto3
import sagemaker
from sagemaker.predictor import Predictor

url = sys.argv[1]
boto = boto3.Session(region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
session = sagemaker.Session(
    boto_session=boto,
    sagemaker_client=boto.client("sagemaker", endpoint_url=url),
    sagemaker_runtime_client=boto.client("sagemaker-runtime", endpoint_url=url),
)
predictor = Predictor("sdk", sagemaker_session=session)
predictor.update_endpoint(model_name="sdk-next", initial_instance_count=1, instance_type="ml.m5.large")
print("\\nanswer:", predictor.predict(b"{}", initial_args={"ContentType": "application/json"}).decode())
"""


def test_the_sdks_update_endpoint_copies_the_configurations_tags(local: LocalSageMaker) -> None:
    """The SageMaker Python SDK v2's Predictor.update_endpoint(), without tags=: it copies the old
    configuration's tags with ListTags into the new one, updates, waits, and predicts from the new model."""
    sm = local.sagemaker()
    sm.create_model(ModelName="sdk", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    sm.create_model(ModelName="sdk-next", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/french:1"})
    sm.create_endpoint_config(
        EndpointConfigName="sdk",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "sdk", "InitialInstanceCount": 1}],
        Tags=[{"Key": "owner", "Value": "ml-platform"}],
    )
    sm.create_endpoint(EndpointName="sdk", EndpointConfigName="sdk")
    in_service(sm, "sdk")
    run = subprocess.run(
        [str(SDK_PYTHON), "-c", SDK_UPDATE, local.url], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answer = run.stdout.rpartition("answer: ")[2]  # after the SDK's waiter's progress marks
    assert json.loads(answer)["container"] == "french", run.stdout
    described = sm.describe_endpoint(EndpointName="sdk")
    assert described["EndpointConfigName"] != "sdk"
    config_arn = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])[
        "EndpointConfigArn"
    ]
    assert sm.list_tags(ResourceArn=config_arn)["Tags"] == [{"Key": "owner", "Value": "ml-platform"}]
