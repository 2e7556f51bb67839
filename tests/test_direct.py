"""Direct mode through an unmodified boto3 client: routing, headers both ways, streaming, and its errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ResponseStreamingError
from conftest import (
    Processes,
    container_doc,
    endpoint_doc,
    invoke,
    multi_model_doc,
    runtime_client,
    write_artifact,
)

NAMES = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def client(module_procs: Processes) -> Iterator[Any]:
    containers = [container_doc(name, module_procs.container(name).url) for name in NAMES]
    prefix = module_procs.tmp / "models"
    write_artifact(prefix / "a" / "model.tar.gz", {"weights.txt": "a"})
    containers.append(multi_model_doc("multi", module_procs.model_container().url, prefix))
    gateway = module_procs.gateway(
        endpoint_doc("Direct", containers), "--model-cache", str(module_procs.tmp / "cache")
    )
    yield runtime_client(gateway.url)


@pytest.mark.parametrize("target", NAMES)
def test_each_container_is_reached_by_its_hostname(client: Any, target: str) -> None:
    answer = json.loads(invoke(client, target, {"instances": [1, 2]})["Body"])
    assert answer["trail"] == [target]
    assert answer["instances"] == [1, 2]


def test_forwards_only_the_runtime_api_headers(client: Any) -> None:
    response = invoke(
        client,
        "alpha",
        {},
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=1",
        InferenceId="inference-7",
    )
    seen = json.loads(response["Body"])["seen"]["alpha"]["headers"]
    assert seen["Content-Type"] == "application/json"
    assert seen["Accept"] == "application/json"
    assert seen["X-Amzn-SageMaker-Custom-Attributes"] == "trace=1"
    assert seen["X-Amzn-SageMaker-Inference-Id"] == "inference-7"
    lowered = {name.lower() for name in seen}
    for dropped in (
        "authorization",
        "x-amz-date",
        "user-agent",
        "amz-sdk-invocation-id",
        "x-amzn-sagemaker-target-container-hostname",
    ):
        assert dropped not in lowered


def test_answers_with_the_container_content_type_and_sagemaker_headers(client: Any) -> None:
    doc = {"faults": {"gamma": {"content_type": "text/csv; charset=utf-8", "attributes": "answer=42"}}}
    response = invoke(client, "gamma", doc)
    assert response["ContentType"] == "text/csv; charset=utf-8"
    assert response["CustomAttributes"] == "answer=42"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert len(response["ResponseMetadata"]["RequestId"]) == 36


def test_request_ids_differ(client: Any) -> None:
    first = invoke(client, "alpha")["ResponseMetadata"]["RequestId"]
    second = invoke(client, "alpha")["ResponseMetadata"]["RequestId"]
    assert first != second


def test_raw_bodies_pass_through_untouched(client: Any) -> None:
    payload = bytes(range(256)) * 100
    response = invoke(client, "alpha", Body=payload, ContentType="application/octet-stream")
    assert response["Body"] == payload
    assert response["ContentType"] == "application/octet-stream"


def test_empty_body(client: Any) -> None:
    assert invoke(client, "alpha", Body=b"")["Body"] == b""


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_answers_stream_through(client: Any, chunked: bool) -> None:
    size = 3 * 1024 * 1024 + 17
    response = invoke(client, "beta", {"faults": {"beta": {"size": size, "chunked": chunked}}})
    assert response["Body"] == b"x" * size


def test_container_error_is_a_model_error_with_the_original_status_and_message(client: Any) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, "alpha", {"faults": {"alpha": {"status": 400, "message": "bad tensor shape"}}})
    error = caught.value.response
    assert error["OriginalStatusCode"] == 400
    assert error["OriginalMessage"] == "bad tensor shape"
    assert "alpha" in error["Error"]["Message"] and "bad tensor shape" in error["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424


def test_server_errors_keep_their_status(client: Any) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, "gamma", {"faults": {"gamma": {"status": 507, "message": "Out of resources"}}})
    assert caught.value.response["OriginalStatusCode"] == 507
    assert "server error (507) from gamma" in caught.value.response["Error"]["Message"]


def test_missing_hostname_is_a_validation_error_naming_the_choices(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="alpha, beta, gamma"):
        invoke(client, None)


def test_unknown_hostname_is_a_validation_error(client: Any) -> None:
    with pytest.raises(
        client.exceptions.ValidationError, match="'delta' is not a container of endpoint demo"
    ):
        invoke(client, "delta")


@pytest.mark.parametrize("target", ["bad_name", "-leading", "x" * 64])
def test_hostname_breaking_the_pattern_is_a_validation_error(client: Any, target: str) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="does not match"):
        invoke(client, target)


def test_unknown_endpoint_is_a_validation_error_worded_as_sagemaker(client: Any) -> None:
    with pytest.raises(
        client.exceptions.ValidationError, match="Endpoint other of account 000000000000 not found"
    ):
        client.invoke_endpoint(EndpointName="other", TargetContainerHostname="alpha", Body=b"{}")


def test_endpoint_name_breaking_the_pattern(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="does not match"):
        client.invoke_endpoint(EndpointName="a" * 64, TargetContainerHostname="alpha", Body=b"{}")


def test_body_over_6_mib_is_refused(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="at most 6291456 bytes"):
        invoke(client, "alpha", Body=b"x" * (6 * 1024 * 1024 + 1))


def test_body_of_exactly_6_mib_is_served(client: Any) -> None:
    body = b"y" * (6 * 1024 * 1024)
    assert invoke(client, "alpha", Body=body, ContentType="application/octet-stream")["Body"] == body


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("ContentType", "x" * 1025, "ContentType"),
        ("Accept", "é", "Accept"),
        ("CustomAttributes", "a" * 1025, "CustomAttributes"),
        ("TargetModel", "m" * 1025, "TargetModel"),
        ("TargetModel", "model\x7f.tar.gz", "Malformed HTTP request"),
        ("InferenceId", "i" * 65, "InferenceId"),
        ("TargetVariant", "Canary", "variant"),
    ],
)
def test_headers_breaking_the_api_constraints(client: Any, field: str, value: str, match: str) -> None:
    with pytest.raises(client.exceptions.ValidationError, match=match):
        invoke(client, "alpha", **{field: value})


def test_headers_each_at_its_limit_are_served_together(client: Any) -> None:
    """ContentType, Accept and CustomAttributes are 1024 characters each at most, not together."""
    answer = invoke(
        client, "alpha", {}, ContentType="x" * 1024, Accept="y" * 1024, CustomAttributes="z" * 1024
    )
    assert json.loads(answer["Body"])["trail"] == ["alpha"]


def test_stream_cut_after_the_answer_began_fails_the_read(client: Any) -> None:
    size = 2 * 1024 * 1024
    with pytest.raises(ResponseStreamingError):  # reading the body fails: the gateway cut the connection
        invoke(client, "beta", {"faults": {"beta": {"size": size, "cut_at": 300_000}}})
    assert json.loads(invoke(client, "beta")["Body"])["trail"] == ["beta"]


def test_target_model_to_a_single_model_container(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError) as caught:
        invoke(client, "alpha", {}, TargetModel="model.tar.gz")
    assert "does not support target model header" in caught.value.response["Error"]["Message"]
    # SageMaker's finer code travels in the body (botocore keeps only the modelled members)
    request = urllib.request.Request(
        client.meta.endpoint_url + "/invocations",
        data=b"{}",
        headers={
            "X-Amzn-SageMaker-Target-Container-Hostname": "alpha",
            "X-Amzn-SageMaker-Target-Model": "m.tar.gz",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=10)
    with raw.value as error:
        assert json.loads(error.read())["ErrorCode"] == "TARGET_MODEL_HEADER_NOT_SUPPORTED"


def test_target_container_and_target_model_combine(client: Any) -> None:
    answer = json.loads(invoke(client, "multi", {}, TargetModel="a/model.tar.gz")["Body"])
    assert answer["target"] == "a/model.tar.gz"
    assert answer["files"] == {"weights.txt": "a"}


def test_multi_model_container_without_target_model(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="missing a target model header"):
        invoke(client, "multi", {})


@pytest.mark.parametrize(
    "model",
    [
        "../escape.tar.gz",
        "a/../../b.tar.gz",
        "/etc/passwd",
        "a//b.tar.gz",
        "a\\b.tar.gz",
        "a/%2e%2e/b",
        "./m.tar.gz",
    ],
)
def test_target_model_cannot_leave_the_prefix(client: Any, model: str) -> None:
    with pytest.raises(
        client.exceptions.ValidationError, match="must be a path relative to the model prefix"
    ):
        invoke(client, "multi", {}, TargetModel=model)
