"""`mce` as a user runs it: exit codes, messages, start-up failures and a clean stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from conftest import Processes, container_doc, endpoint_doc, runtime_client


def mce(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], check=False, capture_output=True, text=True, timeout=60
    )


def test_validate_accepts_a_good_document(procs: Processes) -> None:
    path = procs.write_endpoint(endpoint_doc("Direct", [container_doc("a", "http://127.0.0.1:1")]))
    result = mce("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "endpoint demo is valid (one container: a)" in result.stdout
    two = procs.write_endpoint(
        endpoint_doc(
            "Serial", [container_doc("a", "http://127.0.0.1:1"), container_doc("b", "http://127.0.0.1:2")]
        ),
        "two.yaml",
    )
    assert "endpoint demo is valid (Serial: a -> b)" in mce("validate", str(two)).stdout
    models = {
        **container_doc("m", "http://127.0.0.1:1"),
        "Mode": "MultiModel",
        "ModelDataUrl": str(procs.tmp),
    }
    one = procs.write_endpoint(endpoint_doc("Serial", [models]), "models.yaml")
    assert (
        "endpoint demo is valid (multi-model container: m)" in mce("validate", str(one)).stdout
    )  # not "Serial"


def test_validate_finds_model_data_that_is_not_there(procs: Processes) -> None:
    """`mce up` would fail on it; validate says so first (hardening #13)."""
    container = {
        **container_doc("a", "http://127.0.0.1:1"),
        "Mode": "MultiModel",
        "ModelDataUrl": "no-such-models/",
    }
    result = mce("validate", str(procs.write_endpoint(endpoint_doc("Direct", [container]))))
    assert result.returncode == 1
    assert (
        "Containers[0].ModelDataUrl: " in result.stderr and "no-such-models does not exist" in result.stderr
    )


def test_status_takes_an_address_without_its_scheme(procs: Processes) -> None:
    a = procs.container("a")
    gateway = procs.gateway(endpoint_doc("Direct", [container_doc("a", a.url)]))
    result = mce("status", f"127.0.0.1:{gateway.port}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("a ") and "Healthy" in result.stdout


def test_validate_exits_1_with_every_message(procs: Processes) -> None:
    doc = endpoint_doc("Direct", [{"ContainerHostname": "bad_name"}, {"Image": "x"}])
    result = mce("validate", str(procs.write_endpoint(doc)))
    assert result.returncode == 1
    assert (
        "Containers[0].ContainerHostname: 'bad_name' does not match [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
        in result.stderr
    )
    assert "Containers[1].ContainerHostname: required in Direct mode" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_needs_the_address_of_each_container(procs: Processes) -> None:
    path = procs.write_endpoint(endpoint_doc("Direct", [{"ContainerHostname": "a"}]))
    result = mce("serve", str(path), "--port", "0")
    assert result.returncode == 1
    assert "Containers[0].Backend.Url: required to serve" in result.stderr


def test_serve_on_a_port_in_use_says_so(procs: Processes) -> None:
    path = procs.write_endpoint(endpoint_doc("Direct", [container_doc("a", "http://127.0.0.1:1")]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = mce("serve", str(path), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_cleanly(procs: Processes) -> None:
    a = procs.container("a")
    gateway = procs.gateway(endpoint_doc("Direct", [container_doc("a", a.url)]))
    client = runtime_client(gateway.url)
    client.invoke_endpoint(
        EndpointName="demo", TargetContainerHostname="a", Body=b"{}"
    )  # a keep-alive connection stays open
    assert gateway.terminate() == 0


def test_sigterm_lets_an_answer_in_progress_finish(procs: Processes, tmp_path: Path) -> None:
    a = procs.container("a")
    gateway = procs.gateway(
        endpoint_doc("Direct", [container_doc("a", a.url, InvocationTimeoutInSeconds=2)]),
        "--shutdown-grace",
        "20",
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        body = json.dumps({"faults": {"a": {"hang": True}}}).encode()
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Amzn-SageMaker-Target-Container-Hostname: a\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        # The request is in flight once the gateway has read it; a ping on another connection, answered
        # after it, orders the two without sleeping.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as probe:
            probe.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert probe.recv(65536).startswith(b"HTTP/1.1 200")
        gateway.popen.terminate()
        answer = sock.recv(65536)
    # the in-flight request still got its (timeout) answer, and then the gateway exited
    assert answer.startswith(b"HTTP/1.1 424") and b"did not answer within 2 s" in answer
    assert gateway.popen.wait(timeout=20) == 0
