"""InvokeEndpointWithResponseStream through an unmodified boto3, and sessions: a real streaming container
(tests/containers/stream_server.py) behind `mce serve`; boto3's own event-stream parser reads the answer."""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from conftest import HERE, Proc, Processes, container_doc, endpoint_doc, metric, start_process, wait_until

STREAM_SERVER = HERE / "containers" / "stream_server.py"


def stream_container(procs: Processes) -> Proc:
    proc = start_process([sys.executable, str(STREAM_SERVER)])
    procs.started.append(proc)
    return proc


@pytest.fixture
def direct(procs: Processes, clients: Any) -> Iterator[tuple[Any, Proc, Proc]]:
    """A Direct endpoint `demo`: `llm` streams, `echo` is a plain contract container."""
    llm, echo = stream_container(procs), procs.container("echo")
    gateway = procs.gateway(
        endpoint_doc(
            "Direct",
            [container_doc("llm", llm.url, InvocationTimeoutInSeconds=2), container_doc("echo", echo.url)],
        )
    )
    yield clients(gateway.url), gateway, llm


def stream(client: Any, request: dict[str, Any], **call: Any) -> Any:
    return client.invoke_endpoint_with_response_stream(
        EndpointName="demo",
        TargetContainerHostname=call.pop("TargetContainerHostname", "llm"),
        ContentType="application/json",
        Body=json.dumps(request),
        **call,
    )


def lines(events: Any) -> list[dict[str, Any]]:
    """The JSON lines of a stream's PayloadParts (a line may be split across parts)."""
    data = b"".join(event["PayloadPart"]["Bytes"] for event in events)
    return [json.loads(line) for line in data.splitlines()]


def test_events_arrive_as_the_container_sends_them(direct: tuple[Any, Proc, Proc], tmp_path: Path) -> None:
    client, _, _ = direct
    gate = tmp_path / "gate"
    answer = stream(client, {"tokens": 4, "gate": str(gate)}, Accept="application/jsonlines")
    assert answer["ContentType"] == "application/jsonlines"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    events = iter(answer["Body"])
    first = next(events)  # the container is still waiting at its gate: this came before it finished
    assert json.loads(first["PayloadPart"]["Bytes"]) == {"token": 0}
    gate.touch()
    assert lines(events) == [{"token": 1}, {"token": 2}, {"token": 3}]


def test_the_container_gets_the_accept_and_the_session(direct: tuple[Any, Proc, Proc]) -> None:
    client, _, _ = direct
    answer = stream(
        client, {"tokens": 1, "session": "echo"}, Accept="application/jsonlines", SessionId="abc-1"
    )
    assert lines(answer["Body"]) == [{"token": 0, "session": "abc-1", "accept": "application/jsonlines"}]


def test_a_container_that_fails_before_its_first_byte_is_a_model_error(
    direct: tuple[Any, Proc, Proc],
) -> None:
    client, _, _ = direct
    with pytest.raises(ClientError) as failed:
        stream(client, {"error": 503})
    assert failed.value.response["Error"]["Code"] == "ModelError"
    assert "the model refused: 503" in failed.value.response["Error"]["Message"]


def test_a_stream_broken_midway_is_raised_while_iterating(direct: tuple[Any, Proc, Proc]) -> None:
    client, gateway, _ = direct
    answer = stream(client, {"tokens": 5, "break_after": 2})
    received = []
    with pytest.raises(EventStreamError) as broken, contextlib.closing(answer["Body"]):
        for event in answer["Body"]:
            received.append(event)
    assert lines(received) == [{"token": 0}, {"token": 1}]
    assert broken.value.response["Error"]["Code"] == "ModelStreamError"
    assert "llm" in broken.value.response["Error"]["Message"]
    # the client connection goes on serving, and the broken stream counts as a model error
    assert lines(stream(client, {"tokens": 2})["Body"]) == [{"token": 0}, {"token": 1}]
    assert metric(gateway.url, "sagemaker_invocation_model_errors_total") == 1


def test_a_stalled_container_is_a_timeout_event(direct: tuple[Any, Proc, Proc]) -> None:
    client, _, _ = direct
    answer = stream(client, {"tokens": 5, "stall_after": 1})
    received = []
    with pytest.raises(EventStreamError) as stalled, contextlib.closing(answer["Body"]):
        for event in answer["Body"]:
            received.append(event)
    assert lines(received) == [{"token": 0}]
    assert "did not answer within 2 s" in stalled.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"tokens": 5, "break_after": 1}, "StreamBroken"),
        ({"tokens": 5, "stall_after": 1}, "ModelInvocationTimeExceeded"),
    ],
)
def test_the_error_event_carries_its_error_code(
    direct: tuple[Any, Proc, Proc], request_body: dict[str, Any], code: str
) -> None:
    """boto3 keeps only Code and Message of an exception event; the wire has ErrorCode too."""
    _, gateway, _ = direct
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    body = json.dumps(request_body)
    connection.request(
        "POST",
        "/endpoints/demo/invocations-response-stream",
        body,
        {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Container-Hostname": "llm"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/vnd.amazon.eventstream"
    parsed = EventStreamBuffer()
    parsed.add_data(response.read())
    connection.close()
    messages = list(parsed)
    assert [m.headers[":message-type"] for m in messages] == ["event", "exception"]
    assert messages[1].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(messages[1].payload)["ErrorCode"] == code


def test_a_plain_container_streams_as_one_event(direct: tuple[Any, Proc, Proc]) -> None:
    client, _, _ = direct
    answer = stream(client, {"hello": "world"}, TargetContainerHostname="echo")
    [event] = list(answer["Body"])
    assert json.loads(event["PayloadPart"]["Bytes"])["trail"] == ["echo"]


def test_new_session_is_refused_by_the_streaming_call(direct: tuple[Any, Proc, Proc]) -> None:
    client, _, _ = direct
    with pytest.raises(ClientError) as refused:
        stream(client, {"tokens": 1}, SessionId="NEW_SESSION")
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "NEW_SESSION" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as bad:
        stream(client, {"tokens": 1}, SessionId="not_a_valid id")
    assert bad.value.response["Error"]["Code"] == "ValidationError"


def test_sessions_both_ways_through_invoke_endpoint(direct: tuple[Any, Proc, Proc]) -> None:
    client, _, _ = direct

    def invoke(session: str, **request: Any) -> dict[str, Any]:
        answer: dict[str, Any] = client.invoke_endpoint(
            EndpointName="demo",
            TargetContainerHostname="llm",
            ContentType="application/json",
            Body=json.dumps({"tokens": 1, "session": "echo", **request}),
            SessionId=session,
        )
        return answer

    opened = invoke("NEW_SESSION")
    assert opened["NewSessionId"] == "sess-1; Expires=2030-01-01T00:00:00Z"
    assert "ClosedSessionId" not in opened
    assert json.loads(opened["Body"].read())["session"] == "NEW_SESSION"
    used = invoke("sess-1")
    assert "NewSessionId" not in used and json.loads(used["Body"].read())["session"] == "sess-1"
    closed = invoke("sess-1", close=True)
    assert closed["ClosedSessionId"] == "sess-1"


def test_a_serial_pipeline_streams_its_last_containers_answer(procs: Processes, clients: Any) -> None:
    echo, llm = procs.container("first"), stream_container(procs)
    gateway = procs.gateway(
        endpoint_doc("Serial", [container_doc(None, echo.url), container_doc(None, llm.url)])
    )
    client = clients(gateway.url)
    # the first container's answer (the request, with its trail) is the streamer's request
    answer = client.invoke_endpoint_with_response_stream(
        EndpointName="demo", ContentType="application/json", Body=json.dumps({"tokens": 2})
    )
    assert lines(answer["Body"]) == [{"token": 0}, {"token": 1}]


def test_a_slow_client_slows_the_containers_read_not_the_gateways_memory(
    direct: tuple[Any, Proc, Proc],
) -> None:
    """The client stops reading after the first event: the container's writes block soon after (it has
    written a small part of its answer), then it all arrives once the client reads again."""
    client, _, llm = direct
    total = 256 * 1024 * 1024
    answer = stream(client, {"tokens": 1, "bulk": total})
    events = iter(answer["Body"])
    first = next(events)["PayloadPart"]["Bytes"]
    assert first.startswith(b'{"token": 0}\n')

    def progress() -> int:
        with urllib.request.urlopen(llm.url + "/progress", timeout=10) as answer:
            return int(answer.read())

    seen: list[int] = []

    def blocked() -> bool:
        seen.append(progress())
        return len(seen) > 20 and seen[-1] == seen[-21]  # no progress over the last 20 looks

    wait_until(blocked, "the container's writes to block")
    assert seen[-1] < total // 8, f"the container wrote {seen[-1]} bytes to a client that reads nothing"
    received = len(first) + sum(len(event["PayloadPart"]["Bytes"]) for event in events)
    assert received == len(b'{"token": 0}\n') + total


@pytest.mark.parametrize(
    ("member", "value", "said"),
    [
        ("InferenceComponentName", "my-component", "Inference Component Name header is not allowed"),
        ("InferenceComponentName", "bad_name!", "must match"),
        ("EnableExplanations", "`true`", "ClarifyExplainerConfig"),
        ("PrefixAwareId", "conversation-7", "PREFIX_AWARE"),
    ],
)
def test_what_the_endpoint_is_not_configured_for_is_refused_not_dropped(
    direct: tuple[Any, Proc, Proc], member: str, value: str, said: str
) -> None:
    client, _, _ = direct
    with pytest.raises(ClientError) as refused:
        client.invoke_endpoint(
            EndpointName="demo", TargetContainerHostname="echo", Body=b"{}", **{member: value}
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert said in refused.value.response["Error"]["Message"]
