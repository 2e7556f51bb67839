"""Real faults: containers that hang, reset, crash, answer garbage or are not there. The rest keep serving."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Processes, container_doc, endpoint_doc, invoke, posts, runtime_client


def direct(procs: Processes, **backend: Any) -> tuple[Any, dict[str, Any]]:
    """A Direct endpoint over `victim` and `bystander`; returns the client and the started processes."""
    victim = procs.container("victim")
    bystander = procs.container("bystander")
    gateway = procs.gateway(
        endpoint_doc(
            "Direct",
            [container_doc("victim", victim.url, **backend), container_doc("bystander", bystander.url)],
        )
    )
    return runtime_client(gateway.url), {"victim": victim, "bystander": bystander, "gateway": gateway}


def assert_bystander_serves(client: Any) -> None:
    assert json.loads(invoke(client, "bystander", {})["Body"])["trail"] == ["bystander"]


def test_hung_container_times_out_as_a_model_error_naming_it(procs: Processes) -> None:
    client, _ = direct(procs, InvocationTimeoutInSeconds=1)
    with pytest.raises(client.exceptions.ModelError, match=r"victim .* did not answer within 1 s"):
        invoke(client, "victim", {"faults": {"victim": {"hang": True}}})
    assert_bystander_serves(client)
    assert json.loads(invoke(client, "victim", {})["Body"])["trail"] == ["victim"]


def test_connection_reset(procs: Processes) -> None:
    client, _ = direct(procs)
    with pytest.raises(client.exceptions.ModelError, match=r"victim .*connection"):
        invoke(client, "victim", {"faults": {"victim": {"reset": True}}})
    assert_bystander_serves(client)


def test_container_that_crashes_mid_request_then_stays_down(procs: Processes) -> None:
    client, started = direct(procs)
    with pytest.raises(client.exceptions.ModelError, match="victim"):
        invoke(client, "victim", {"faults": {"victim": {"exit": 3}}})
    assert started["victim"].popen.wait(timeout=10) == 3
    with pytest.raises(
        client.exceptions.ModelError, match=r"victim at 127\.0\.0\.1:\d+ refused the connection"
    ):
        invoke(client, "victim", {})
    assert_bystander_serves(client)


def test_killed_container(procs: Processes) -> None:
    client, started = direct(procs)
    invoke(client, "victim", {})  # leave a pooled keep-alive connection behind
    started["victim"].kill()
    with pytest.raises(client.exceptions.ModelError, match="victim"):
        invoke(client, "victim", {})
    assert_bystander_serves(client)


def test_garbage_answer_is_a_model_error(procs: Processes) -> None:
    client, _ = direct(procs)
    with pytest.raises(client.exceptions.ModelError, match=r"victim .*not a valid HTTP response"):
        invoke(client, "victim", {"faults": {"victim": {"garbage": True}}})
    assert_bystander_serves(client)


def test_answer_cut_short_before_the_gateway_began_relaying(procs: Processes) -> None:
    client, _ = direct(procs)
    with pytest.raises(client.exceptions.ModelError, match=r"victim .*in the middle of its response"):
        invoke(client, "victim", {"faults": {"victim": {"size": 50_000, "cut_at": 1_000}}})
    assert_bystander_serves(client)


def test_container_that_was_never_there(procs: Processes) -> None:
    bystander = procs.container("bystander")
    # a port that was just free: bind, read it, close
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    gateway = procs.gateway(
        endpoint_doc(
            "Direct",
            [
                container_doc("ghost", f"http://127.0.0.1:{free_port}"),
                container_doc("bystander", bystander.url),
            ],
        )
    )
    client = runtime_client(gateway.url)
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, "ghost", {})
    assert "ghost" in caught.value.response["Error"]["Message"]
    assert "OriginalStatusCode" not in caught.value.response  # there was no answer to report
    assert_bystander_serves(client)


def test_client_that_gives_up_does_not_stall_the_gateway(procs: Processes) -> None:
    _, started = direct(procs)
    impatient = runtime_client(started["gateway"].url, read_timeout=1)
    from botocore.exceptions import ReadTimeoutError

    with pytest.raises(ReadTimeoutError):
        invoke(impatient, "victim", {"faults": {"victim": {"hang": True}}})
    client = runtime_client(started["gateway"].url)
    assert_bystander_serves(client)
    assert json.loads(invoke(client, "victim", {})["Body"])["trail"] == ["victim"]


def test_a_request_the_container_read_and_dropped_is_never_sent_again(procs: Processes) -> None:
    """D8: the container read the request on a reused connection and closed it unanswered. It may have
    run it, so the gateway answers ModelError instead of sending it again (10 requests used to run
    20 times)."""
    client, started = direct(procs)
    for _ in range(10):
        assert json.loads(invoke(client, "victim", {"faults": {"victim": {"drop_next": True}}})["Body"])[
            "trail"
        ] == ["victim"]
        with pytest.raises(
            client.exceptions.ModelError, match=r"victim .*closed the connection before answering"
        ):
            invoke(client, "victim", {"n": 2})
    assert posts(started["victim"]) == 20  # ten answered, ten read and dropped: each exactly once
    assert_bystander_serves(client)
    assert "Traceback" not in (procs.tmp / "gateway.log").read_text()


def test_a_kept_alive_connection_the_container_closed_is_not_reused(procs: Processes) -> None:
    """The container closes each connection right after answering (its keep-alive timeout ran out): the
    next request finds the pooled connection closed, goes out on a new one, and runs once."""
    client, started = direct(procs)
    for n in range(20):
        answer = json.loads(
            invoke(client, "victim", {"n": n, "faults": {"victim": {"close_idle": True}}})["Body"]
        )
        assert answer["n"] == n
    assert posts(started["victim"]) == 20


def test_container_whose_host_does_not_resolve(procs: Processes) -> None:
    bystander = procs.container("bystander")
    gateway = procs.gateway(
        endpoint_doc(
            "Direct",
            [
                container_doc("lost", "http://no-such-host.invalid:8080"),
                container_doc("bystander", bystander.url),
            ],
        )
    )
    client = runtime_client(gateway.url)
    with pytest.raises(
        client.exceptions.ModelError, match=r"lost at no-such-host.invalid:8080 could not be resolved"
    ):
        invoke(client, "lost", {})
    assert_bystander_serves(client)
