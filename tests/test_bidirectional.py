"""InvokeEndpointWithBidirectionalStream on `mce up --http2-port`, with the official client
(`aws-sdk-sagemaker-runtime-http2`, Python 3.12, in .venv/http2: .ci/setup) against the project's
WebSocket container (examples/containers/bidi_echo.py): both directions as they arrive, the event framing
and the errors the client expects, and the client's own ways of failing."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_local_sagemaker import ROLE, LocalSageMaker

CLIENT = ROOT / "tests" / "clients" / "bidi_client.py"
HTTP2_PYTHON = ROOT / ".venv" / "http2" / "bin" / "python"
_ANNOUNCED = re.compile(r"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2=(\S+) SSL_CERT_FILE=(\S+)")


class Http2:
    """`mce up --http2-port 0` and where its HTTP/2 listener is."""

    def __init__(self, local: LocalSageMaker) -> None:
        self.local = local
        while True:
            try:
                line = local.proc.lines.get(timeout=60)
            except queue.Empty:
                raise AssertionError("mce up never announced its HTTP/2 listener") from None
            found = _ANNOUNCED.search(line)
            if found:
                self.url, self.cert = found.group(1), found.group(2)
                return
            assert line, "mce up exited before announcing its HTTP/2 listener"

    def call(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The official client, as a user runs it: told where and what to trust by the environment."""
        assert HTTP2_PYTHON.exists(), f"{HTTP2_PYTHON} is missing: bash .ci/setup makes it (Python 3.12)"
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2": self.url,
            "SSL_CERT_FILE": self.cert,
            "AWS_ACCESS_KEY_ID": "AKIDTEST",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
        }
        done = subprocess.run(
            [str(HTTP2_PYTHON), str(CLIENT)],
            input=json.dumps(plan),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def texts(result: dict[str, Any]) -> list[str]:
    return [base64.b64decode(e["bytes"]).decode() for e in result["events"] if e["type"] == "UTF8"]


@pytest.fixture(scope="module")
def http2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http2]:
    tmp = tmp_path_factory.mktemp("bidi")
    with LocalSageMaker(tmp, None, None, "--http2-port", "0") as local:
        served = Http2(local)
        sm = local.sagemaker()
        for name, image in (("talk", "test/bidi:1"), ("plain", "test/echo:1")):
            sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
            sm.create_endpoint_config(
                EndpointConfigName=name, ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}]
            )
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        for name in ("talk", "plain"):
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
        yield served


def test_both_directions_as_they_arrive(http2: Http2) -> None:
    parts = [["hello", "UTF8"], [base64.b64encode(b"\x00\x01\xff").decode(), "BINARY"], ["again", "UTF8"]]
    result = http2.call({"endpoint": "talk", "parts": parts, "lockstep": True, "then": "close"})
    assert "error" not in result, result
    assert result["variant"] == "AllTraffic"
    # lockstep: each answer arrived before the next part was sent, so the relay is not batching
    assert [e["type"] for e in result["events"]] == ["UTF8", "BINARY", "UTF8"]
    assert texts(result) == ["echo: hello", "echo: again"]
    assert base64.b64decode(result["events"][1]["bytes"]) == b"\xff\x01\x00"


def test_a_long_answer_keeps_its_order_and_every_part(http2: Http2) -> None:
    result = http2.call(
        {"endpoint": "talk", "parts": [["many 3000", "UTF8"], ["close", "UTF8"]]}
    )  # ~3 MiB, past any window
    assert "error" not in result, result
    got = texts(result)
    assert len(got) == 3000 and [int(t.split()[0]) for t in got] == list(range(3000))


def test_the_invocation_path_and_query_reach_the_container(http2: Http2) -> None:
    result = http2.call(
        {
            "endpoint": "talk",
            "path": "v1/chat",
            "query": "lang=en&x=1",
            "parts": [["path", "UTF8"], ["close", "UTF8"]],
        }
    )
    assert texts(result) == ["/v1/chat?lang=en&x=1"], result
    refused = http2.call(
        {"endpoint": "talk", "path": "../admin", "parts": [["path", "UTF8"], ["close", "UTF8"]]}
    )
    assert refused["error"]["type"] == "InputValidationError", refused


def test_the_container_closing_with_an_error_is_a_model_stream_error(http2: Http2) -> None:
    result = http2.call(
        {"endpoint": "talk", "parts": [["first", "UTF8"], ["fail", "UTF8"]], "lockstep": False}
    )
    assert texts(result)[:1] == ["echo: first"]
    error = result["error"]
    assert error["type"] == "ModelStreamError" and "1011" in error["message"], error


def test_refusals_arrive_as_the_client_expects(http2: Http2) -> None:
    missing = http2.call({"endpoint": "nowhere", "parts": [["x", "UTF8"]]})
    assert missing["error"]["type"] == "InputValidationError" and "nowhere" in missing["error"]["message"]
    wrong_variant = http2.call({"endpoint": "talk", "variant": "Other", "parts": [["x", "UTF8"]]})
    assert wrong_variant["error"]["type"] == "InputValidationError", wrong_variant
    # a container without a WebSocket: the echo container answers the upgrade with 404
    no_socket = http2.call({"endpoint": "plain", "parts": [["x", "UTF8"]]})
    assert no_socket["error"]["type"] == "ModelError", no_socket
    assert no_socket["error"]["members"].get("original_status_code") == 404, no_socket
    # and the endpoint still talks
    assert texts(http2.call({"endpoint": "talk", "parts": [["still", "UTF8"], ["close", "UTF8"]]})) == [
        "echo: still"
    ]


def test_when_the_client_ends_its_input_answers_in_flight_still_arrive(http2: Http2) -> None:
    """The container never closes this one: mce closes the WebSocket once it has been quiet for
    QUIET_CLOSE seconds after the input ended, and every answer sent before that reached the client."""
    result = http2.call({"endpoint": "talk", "parts": [["many 200", "UTF8"], ["last", "UTF8"]]})
    assert "error" not in result, result
    got = texts(result)
    assert len(got) == 201 and got[-1] == "echo: last"


def test_the_certificate_lives_in_the_state_folder_and_its_key_is_private(http2: Http2) -> None:
    cert = Path(http2.cert)
    assert cert.parent == http2.local.state.resolve() / "tls"
    assert (cert.parent / "key.pem").stat().st_mode & 0o077 == 0  # the key is this user's alone


def raw_stream(
    http2: Http2, headers: list[tuple[str, str]], body: bytes
) -> tuple[dict[str, str], bytes, bool]:
    """One HTTP/2 request over TLS, sent with h2 directly (bytes no SDK sends): the answer's headers, its
    body, and whether the stream was reset instead."""
    import socket
    import ssl

    import h2.connection
    import h2.events

    port = int(http2.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=http2.cert)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as plain:
        with context.wrap_socket(plain, server_hostname="localhost") as tls:
            conn = h2.connection.H2Connection()
            conn.initiate_connection()
            conn.send_headers(1, headers)
            conn.send_data(1, body, end_stream=True)
            tls.sendall(conn.data_to_send())
            answer: dict[str, str] = {}
            received = b""
            while True:
                data = tls.recv(65536)
                assert data, "the connection closed before the stream ended"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        answer = {k.decode(): v.decode() for k, v in event.headers}
                    elif isinstance(event, h2.events.DataReceived):
                        received += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    elif isinstance(event, h2.events.StreamEnded):
                        return answer, received, False
                    elif isinstance(event, h2.events.StreamReset):
                        return answer, received, True
                tls.sendall(conn.data_to_send())


def request_headers(
    authority: str, path: str = "/endpoints/talk/invocations-bidirectional-stream"
) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
        ("content-type", "application/vnd.amazon.eventstream"),
    ]


def test_a_foreign_host_and_a_body_that_is_no_event_stream_are_refused(http2: Http2) -> None:
    port = http2.url.rsplit(":", 1)[1]
    answer, body, _ = raw_stream(http2, request_headers(f"rebind.attacker.example:{port}"), b"")
    assert answer[":status"] == "403" and b"not a name this server answers to" in body, (answer, body)
    answer, body, _ = raw_stream(
        http2, request_headers(f"localhost:{port}", "/endpoints/talk/invocations"), b""
    )
    assert answer[":status"] == "400" and answer["x-amzn-errortype"] == "InputValidationError", answer
    _, _, reset = raw_stream(http2, request_headers(f"localhost:{port}"), b"\x00\x00\x00\x05garbage-bytes")
    assert reset  # the stream is reset; the listener and the endpoint go on
    assert texts(http2.call({"endpoint": "talk", "parts": [["after", "UTF8"], ["close", "UTF8"]]})) == [
        "echo: after"
    ]


def test_a_part_larger_than_the_flow_control_window_goes_through(http2: Http2) -> None:
    blob = bytes(range(256)) * 800  # 200 KiB: three times HTTP/2's initial window
    part = [base64.b64encode(blob).decode(), "BINARY"]
    result = http2.call({"endpoint": "talk", "parts": [part], "then": "close"})
    assert "error" not in result, result
    assert [base64.b64decode(e["bytes"]) for e in result["events"]] == [blob[::-1]]
