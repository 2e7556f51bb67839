"""InvokeEndpointAsync against the local SageMaker: an unmodified boto3 (and the AWS CLI) submits, a real
container answers, the result is read back from a local S3 server (moto's server mode)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Processes, container_doc, endpoint_doc, metric, s3_environment, wait_until
from test_local_sagemaker import ROLE, LocalSageMaker

ASYNC_CONFIG = {
    "OutputConfig": {"S3OutputPath": "s3://models/async/out", "S3FailurePath": "s3://models/async/failed"},
    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
}


@pytest.fixture
def local(tmp_path: Path, s3: tuple[str, Any]) -> Iterator[tuple[LocalSageMaker, Any]]:
    url, bucket = s3
    server = LocalSageMaker(tmp_path, env=s3_environment(url))
    sm = server.sagemaker()
    for name, image, config in (
        ("queued", "test/echo:1", ASYNC_CONFIG),
        (
            "stalling",
            "test/stream:1",
            {**ASYNC_CONFIG, "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1}},
        ),
        ("realtime", "test/echo:1", None),
    ):
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
        extra = {"AsyncInferenceConfig": config} if config is not None else {}
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}],
            **extra,
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    for name in ("queued", "stalling", "realtime"):
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    yield server, bucket
    try:
        server.stop()
    finally:
        server.proc.kill()


def read(bucket: Any, uri: str) -> bytes:
    """The object at `uri`, once it exists."""
    location, _, key = uri.removeprefix("s3://").partition("/")

    def written() -> bool:
        try:
            bucket.head_object(Bucket=location, Key=key)
        except ClientError:
            return False
        return True

    wait_until(written, f"{uri} to be written", timeout=60)
    body: bytes = bucket.get_object(Bucket=location, Key=key)["Body"].read()
    return body


def test_a_request_from_s3_is_answered_into_s3(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    bucket.put_object(Bucket="models", Key="async/in/1.json", Body=b'{"question": 1}')
    answer = server.runtime().invoke_endpoint_async(
        EndpointName="queued", InputLocation="s3://models/async/in/1.json", ContentType="application/json"
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    inference_id = answer["InferenceId"]
    assert answer["OutputLocation"] == f"s3://models/async/out/{inference_id}.out"
    assert answer["FailureLocation"] == f"s3://models/async/failed/{inference_id}-error.out"
    assert json.loads(read(bucket, answer["OutputLocation"])) == {
        "container": "echo",
        "request": {"question": 1},
    }
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as page:
        exposition = page.read().decode()
    assert 'sagemaker_approximate_backlog_size{endpoint="queued"} 0.0' in exposition
    assert 'sagemaker_approximate_age_of_oldest_request_seconds{endpoint="queued"} 0.0' in exposition
    assert metric(server.url, "sagemaker_invocations_total", endpoint="queued", container="") == 1


def test_an_inline_body_with_its_own_id_file_name_and_folder(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    answer = server.runtime().invoke_endpoint_async(
        EndpointName="queued",
        Body=b'{"inline": true}',
        ContentType="application/json",
        InferenceId="mine-1",
        S3OutputPathExtension="team/a",
        Filename="answer.json",
    )
    assert answer["InferenceId"] == "mine-1"
    assert answer["OutputLocation"] == "s3://models/async/out/team/a/answer.json"
    assert json.loads(read(bucket, answer["OutputLocation"]))["request"] == {"inline": True}


def test_two_requests_with_one_inference_id_never_share_an_object(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    runtime = server.runtime()
    answers = [
        runtime.invoke_endpoint_async(
            EndpointName="queued",
            Body=json.dumps({"n": n}).encode(),
            ContentType="application/json",
            InferenceId="same",
        )
        for n in (1, 2)
    ]
    assert [a["InferenceId"] for a in answers] == ["same", "same"]
    assert answers[0]["OutputLocation"] != answers[1]["OutputLocation"]
    assert answers[0]["FailureLocation"] != answers[1]["FailureLocation"]
    for n, answer in enumerate(answers, start=1):
        assert json.loads(read(bucket, answer["OutputLocation"]))["request"] == {"n": n}


def test_a_failing_request_is_written_to_the_failure_path(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    answer = server.runtime().invoke_endpoint_async(
        EndpointName="queued", Body=b"not json", ContentType="text/plain"
    )
    failure = json.loads(read(bucket, answer["FailureLocation"]))
    assert failure["OriginalStatusCode"] == 400 and "expected a JSON body" in failure["OriginalMessage"]


def test_a_request_past_its_invocation_timeout_fails_and_the_queue_goes_on(
    local: tuple[LocalSageMaker, Any],
) -> None:
    server, bucket = local
    runtime = server.runtime()
    stalled = runtime.invoke_endpoint_async(
        EndpointName="stalling",
        Body=json.dumps({"tokens": 3, "stall_after": 1}).encode(),
        ContentType="application/json",
        InvocationTimeoutSeconds=1,
    )
    after = runtime.invoke_endpoint_async(
        EndpointName="stalling", Body=json.dumps({"tokens": 2}).encode(), ContentType="application/json"
    )
    assert b"did not finish within 1 s" in read(bucket, stalled["FailureLocation"])
    assert read(bucket, after["OutputLocation"]) == b'{"token": 0}\n{"token": 1}\n'


def test_bad_requests_and_an_endpoint_without_async_are_refused(local: tuple[LocalSageMaker, Any]) -> None:
    server, _ = local
    runtime = server.runtime()
    for call, said in (
        ({"EndpointName": "realtime", "Body": b"{}"}, "not configured for asynchronous inference"),
        ({"EndpointName": "queued"}, "Give InputLocation"),
        ({"EndpointName": "queued", "Body": b"{}", "InputLocation": "s3://models/x"}, "not both"),
        ({"EndpointName": "queued", "InputLocation": "ftp://models/x"}, "must match"),
        ({"EndpointName": "queued", "Body": b"{}", "Filename": "a.b.c"}, "Filename"),
        ({"EndpointName": "queued", "Body": b"x" * 128_001}, "at most 128000 bytes"),
        ({"EndpointName": "queued", "Body": b"{}", "InferenceId": "x" * 65}, "InferenceId"),
    ):
        with pytest.raises(ClientError) as refused:
            runtime.invoke_endpoint_async(**call)
        assert refused.value.response["Error"]["Code"] == "ValidationError", call
        assert said in refused.value.response["Error"]["Message"], call


def test_the_aws_cli_submits_an_async_request(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    bucket.put_object(Bucket="models", Key="async/in/cli.json", Body=b'{"from": "cli"}')
    cli = Path(sys.executable).with_name("aws")
    run = subprocess.run(
        [
            str(cli),
            "sagemaker-runtime",
            "invoke-endpoint-async",
            "--endpoint-url",
            server.url,
            "--region",
            "us-east-1",
            "--endpoint-name",
            "queued",
            "--input-location",
            "s3://models/async/in/cli.json",
            "--content-type",
            "application/json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"AWS_ACCESS_KEY_ID": "AKIDCLI", "AWS_SECRET_ACCESS_KEY": "cli", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert json.loads(read(bucket, answer["OutputLocation"]))["request"] == {"from": "cli"}


def test_an_endpoint_document_can_configure_async(
    procs: Processes, clients: Any, s3: tuple[str, Any]
) -> None:
    """`mce serve DOC` with the document's AsyncInferenceConfig (CreateEndpointConfig's shape)."""
    url, bucket = s3
    echo = procs.container("echo")
    document = {
        **endpoint_doc("Serial", [container_doc(None, echo.url)]),
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://models/documented"}},
    }
    gateway = procs.gateway(document, env=s3_environment(url))
    answer = clients(gateway.url).invoke_endpoint_async(EndpointName="demo", Body=b'{"n": 1}')
    assert answer["FailureLocation"].startswith("s3://models/documented/")  # no failure path: the output's
    assert json.loads(read(bucket, answer["OutputLocation"]))["trail"] == ["echo"]


def exists(bucket: Any, uri: str) -> bool:
    location, _, key = uri.removeprefix("s3://").partition("/")
    try:
        bucket.head_object(Bucket=location, Key=key)
    except ClientError:
        return False
    return True


def submit_behind_a_stall(runtime: Any, count: int, stall_timeout: int) -> list[dict[str, Any]]:
    """On `stalling` (one at a time): a request that stalls for `stall_timeout` s, then `count` behind it."""
    stalled = runtime.invoke_endpoint_async(
        EndpointName="stalling",
        Body=json.dumps({"tokens": 3, "stall_after": 1}).encode(),
        ContentType="application/json",
        InvocationTimeoutSeconds=stall_timeout,
    )
    queued = [
        runtime.invoke_endpoint_async(
            EndpointName="stalling", Body=json.dumps({"tokens": n}).encode(), ContentType="application/json"
        )
        for n in range(1, count + 1)
    ]
    return [stalled, *queued]


def each_ends_in_one_object(bucket: Any, answers: list[dict[str, Any]]) -> list[str]:
    """Waits until every accepted request has its output or its failure object; which, per request (never
    both)."""

    def ended() -> bool:
        return all(
            exists(bucket, a["OutputLocation"]) or exists(bucket, a["FailureLocation"]) for a in answers
        )

    wait_until(ended, "every accepted request to end in an object", 120)
    outcomes = []
    for answer in answers:
        output, failure = exists(bucket, answer["OutputLocation"]), exists(bucket, answer["FailureLocation"])
        assert output != failure, answer
        outcomes.append("output" if output else "failure")
    return outcomes


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_accepted_requests_survive_a_stopped_mce(
    local: tuple[LocalSageMaker, Any], tmp_path: Path, s3: tuple[str, Any], stop: str
) -> None:
    """Queued (and running) asynchronous requests are written down before their 202: after SIGTERM or
    kill -9 and a restart on the same state, each ends in exactly one object, where its 202 said."""
    server, bucket = local
    answers = submit_behind_a_stall(server.runtime(), 5, stall_timeout=3)
    if stop == "SIGTERM":
        assert server.stop() == 0
    else:
        server.proc.kill()
    with LocalSageMaker(tmp_path, server.state, s3_environment(s3[0])):
        outcomes = each_ends_in_one_object(bucket, answers)
    assert outcomes == ["failure"] + ["output"] * 5, outcomes  # the stalled one timed out when run again
    for n, answer in enumerate(answers[1:], start=1):
        assert read(bucket, answer["OutputLocation"]).count(b"token") == n


def test_an_update_to_another_output_path_keeps_every_accepted_request(
    local: tuple[LocalSageMaker, Any],
) -> None:
    server, bucket = local
    sm = server.sagemaker()
    answers = submit_behind_a_stall(server.runtime(), 3, stall_timeout=3)
    moved = {**ASYNC_CONFIG, "OutputConfig": {"S3OutputPath": "s3://models/async/elsewhere"}}
    sm.create_endpoint_config(
        EndpointConfigName="stalling-moved",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "stalling"}],
        AsyncInferenceConfig={**moved, "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1}},
    )
    sm.update_endpoint(EndpointName="stalling", EndpointConfigName="stalling-moved")
    outcomes = each_ends_in_one_object(bucket, answers)  # where each 202 said, not the new path
    assert outcomes == ["failure", "output", "output", "output"], outcomes


def test_a_deleted_endpoints_requests_get_failure_objects(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    answers = submit_behind_a_stall(server.runtime(), 3, stall_timeout=600)
    server.sagemaker().delete_endpoint(EndpointName="stalling")
    assert each_ends_in_one_object(bucket, answers) == ["failure"] * 4
    assert b"stopped taking asynchronous requests" in read(bucket, answers[-1]["FailureLocation"])
