"""Serial mode: a real three-container pipeline, each answer becoming the next request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import conftest
import pytest
from conftest import Processes, container_doc, endpoint_doc, runtime_client

CHAIN = ("first", "second", "third")


@pytest.fixture(scope="module")
def client(module_procs: Processes) -> Iterator[Any]:
    containers = [
        # the last container's short timeout proves, in the skip test, that it was never called
        container_doc(
            name,
            module_procs.container(name).url,
            **({"InvocationTimeoutInSeconds": 3} if name == "third" else {}),
        )
        for name in CHAIN
    ]
    gateway = module_procs.gateway(endpoint_doc("Serial", containers, name="pipeline"))
    yield runtime_client(gateway.url)


def invoke(client: Any, doc: object, **kwargs: Any) -> dict[str, Any]:
    return conftest.invoke(client, None, doc, endpoint="pipeline", **kwargs)


def test_containers_run_in_order_each_answer_feeding_the_next(client: Any) -> None:
    answer = json.loads(invoke(client, {"instances": [3]}, ContentType="application/json")["Body"])
    assert answer["trail"] == list(CHAIN)
    assert answer["instances"] == [3]
    # each container received what the previous one answered
    assert answer["seen"]["second"]["body_bytes"] > answer["seen"]["first"]["body_bytes"]


def test_content_type_is_handed_on_and_accept_goes_to_the_last(client: Any) -> None:
    doc = {
        "faults": {"first": {"content_type": "application/x-first"}, "second": {"content_type": "text/csv"}}
    }
    response = invoke(client, doc, ContentType="application/json", Accept="application/jsonlines")
    seen = json.loads(response["Body"])["seen"]
    assert seen["first"]["headers"]["Content-Type"] == "application/json"
    assert seen["second"]["headers"]["Content-Type"] == "application/x-first"
    assert seen["third"]["headers"]["Content-Type"] == "text/csv"
    assert "Accept" not in seen["first"]["headers"] and "Accept" not in seen["second"]["headers"]
    assert seen["third"]["headers"]["Accept"] == "application/jsonlines"
    assert response["ContentType"] == "application/json"


def test_custom_attributes_travel_along_and_may_be_replaced(client: Any) -> None:
    doc = {"faults": {"second": {"attributes": "from-second"}}}
    response = invoke(client, doc, CustomAttributes="from-client", InferenceId="id-1")
    seen = json.loads(response["Body"])["seen"]
    assert seen["first"]["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "from-client"
    assert seen["second"]["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "from-client"
    assert seen["third"]["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "from-second"
    assert all(seen[name]["headers"]["X-Amzn-SageMaker-Inference-Id"] == "id-1" for name in CHAIN)


def test_the_answer_carries_the_last_container_attributes(client: Any) -> None:
    response = invoke(client, {"faults": {"third": {"attributes": "final=yes"}}})
    assert response["CustomAttributes"] == "final=yes"


def test_a_failure_stops_the_chain_and_names_the_container(client: Any) -> None:
    # If the gateway went on to `third`, it would hang there and the error would name `third`.
    doc = {"faults": {"second": {"status": 503, "message": "worker died"}, "third": {"hang": True}}}
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, doc)
    error = caught.value.response
    assert error["OriginalStatusCode"] == 503
    assert error["OriginalMessage"] == "worker died"
    assert "from second" in error["Error"]["Message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_payload_over_5_mb_between_containers_names_both(client: Any, chunked: bool) -> None:
    doc = {"faults": {"first": {"size": 6_000_000, "chunked": chunked}}}
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, doc)
    message = caught.value.response["Error"]["Message"]
    assert "from first to second" in message and "maximum limit of 5 MB" in message
    if not chunked:
        assert "6000000 bytes" in message


def test_payload_just_under_5_mb_goes_through(client: Any) -> None:
    # `first` answers 5 MiB of raw bytes; the rest of the chain echoes them back
    response = invoke(client, {"faults": {"first": {"size": 5 * 1024 * 1024}}})
    assert response["Body"] == b"x" * (5 * 1024 * 1024)


def test_target_hostname_on_a_serial_endpoint_is_a_validation_error(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="Serial mode"):
        invoke(client, {}, TargetContainerHostname="first")


def test_container_style_path_runs_the_pipeline(client: Any, module_procs: Processes) -> None:
    import urllib.request

    url = client.meta.endpoint_url + "/invocations"
    request = urllib.request.Request(
        url, data=b'{"instances": []}', headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["trail"] == list(CHAIN)


def test_target_model_on_a_pipeline_without_a_multi_model_container(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="does not support target model header"):
        invoke(client, {}, TargetModel="model.tar.gz")
