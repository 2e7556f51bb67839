"""The security boundary of `mce up` and `mce serve` (issue 27), tried as an attacker would: raw HTTP with
a rebinding page's Host, a cross-site Content-Type and Origin, on every path; names that would become
paths; listening beyond loopback. Each test fails on the code before the boundary existed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Processes, container_doc, endpoint_doc, metric, raw_exchange
from test_cli import mce
from test_local_sagemaker import ROLE, LocalSageMaker, deploy

REBOUND = "rebind.attacker.example"
CREATE_MODEL = json.dumps(
    {"ModelName": "planted", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": "test/echo:1"}}
).encode()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalSageMaker]:
    server = LocalSageMaker(tmp_path, None, None, "--allow-host", "mce.internal", "--allow-host", "*.lan")
    yield server
    try:
        server.stop()
    finally:
        server.proc.kill()


def http(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One raw request on a new connection (closed after): its status and body."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    answer = raw_exchange(port, "\r\n".join(lines).encode() + body)
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def control(port: int, host: str, body: bytes = CREATE_MODEL, **headers: str) -> tuple[int, bytes]:
    fields = {"Host": host, "X-Amz-Target": "SageMaker.CreateModel"}
    fields["Content-Type"] = headers.pop("content_type", "application/x-amz-json-1.1")
    return http(port, "POST", "/", {**fields, **headers}, body)


def test_a_rebinding_page_can_do_nothing_on_any_path(local: LocalSageMaker) -> None:
    """DNS rebinding: the page's own name, resolved to 127.0.0.1, in Host; text/plain, which a page may
    send without asking first. Refused on every path with AWS's shape; nothing created, nothing run."""
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "shop", ("AllTraffic", "test/echo:1", 1.0))
    sm.get_waiter("endpoint_in_service").wait(EndpointName="shop", WaiterConfig={"Delay": 1})
    port, foreign = local.proc.port, f"{REBOUND}:{local.proc.port}"
    status, body = control(port, foreign, content_type="text/plain")
    assert status == 403 and json.loads(body)["__type"] == "AccessDeniedException", body
    assert REBOUND in json.loads(body)["message"]
    for method, path in (
        ("GET", "/metrics"),
        ("GET", "/ping"),
        ("POST", "/endpoints/shop/invocations"),
        ("POST", "/endpoints/shop/async-invocations"),
        ("OPTIONS", "/"),
    ):
        status, body = http(port, method, path, {"Host": foreign, "Content-Type": "text/plain"}, b"{}")
        assert status == 403, (path, body)
        assert json.loads(body)["Message"].startswith(f"Host {foreign} is not a name"), body
    # one that names this machine gets through: the same requests, once each
    assert http(port, "GET", "/ping", {"Host": f"localhost:{port}"})[0] == 200
    assert http(port, "POST", "/endpoints/shop/invocations", {"Host": f"[::1]:{port}"}, b"{}")[0] == 200
    assert [model["ModelName"] for model in sm.list_models()["Models"]] == ["shop-alltraffic"]
    runtime.invoke_endpoint(EndpointName="shop", Body=b"{}")
    labels = {"endpoint": "shop", "variant": "AllTraffic", "container": ""}
    assert metric(local.url, "sagemaker_invocations_total", **labels) == 2  # none of the refused ran


def test_control_requests_are_aws_json_and_foreign_origins_are_refused(local: LocalSageMaker) -> None:
    port = local.proc.port
    own = f"127.0.0.1:{port}"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
        status, body = control(port, own, content_type=content_type)
        assert status == 415 and json.loads(body)["__type"] == "UnsupportedMediaTypeException", body
    status, body = http(
        port, "POST", "/", {"Host": own, "X-Amz-Target": "SageMaker.CreateModel"}, CREATE_MODEL
    )
    assert status == 415, body  # no Content-Type at all
    for origin in (f"http://{REBOUND}:{port}", "http://localhost:3000", "null", f"https://{own}"):
        status, body = control(port, own, Origin=origin)
        assert status == 403 and json.loads(body)["__type"] == "AccessDeniedException", (origin, body)
        assert "not this server's own" in json.loads(body)["message"]
    assert local.sagemaker().list_models()["Models"] == []
    # a page mce serves itself may call it: its Origin is mce's own
    assert control(port, own, Origin=f"http://{own}")[0] == 200
    assert (
        control(port, f"LOCALHOST:{port}", content_type="application/x-amz-json-1.1; charset=utf-8")[0] == 400
    )
    assert local.sagemaker().list_models()["Models"][0]["ModelName"] == "planted"  # the second is a duplicate


def test_allowed_host_names_are_answered_and_only_they(local: LocalSageMaker) -> None:
    port = local.proc.port
    assert http(port, "GET", "/metrics", {"Host": f"mce.internal:{port}"})[0] == 200
    assert http(port, "GET", "/metrics", {"Host": "box.lan"})[0] == 200
    assert http(port, "GET", "/metrics", {"Host": "127.9.9.9"})[0] == 200  # all of 127.0.0.0/8 is loopback
    for host in ("lan", "mce.internal.evil.example", "evillan", "127.0.0.1.evil.example", "10.0.0.1", ""):
        assert http(port, "GET", "/metrics", {"Host": host})[0] == 403, host


@pytest.mark.parametrize("command", ["serve", "up"])
def test_listening_beyond_loopback_without_access_refuses_to_start(procs: Processes, command: str) -> None:
    document = str(procs.write_endpoint(endpoint_doc("Direct", [container_doc("a", "http://127.0.0.1:1")])))
    args = [document] if command == "serve" else ["--state", str(procs.tmp / "state")]
    result = mce(command, *args, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "--access" in result.stderr and "--trust-network" in result.stderr
    assert not (procs.tmp / "state").exists()


def test_trust_network_listens_beyond_loopback_and_still_checks_host(procs: Processes) -> None:
    container = procs.container("a")
    gateway = procs.gateway(
        endpoint_doc("Direct", [container_doc("a", container.url)]),
        "--host",
        "0.0.0.0",
        "--trust-network",
        "--allow-host",
        "mnist-direct",
    )
    headers = {"X-Amzn-SageMaker-Target-Container-Hostname": "a"}
    assert (
        http(gateway.port, "POST", "/invocations", {"Host": "mnist-direct:8080", **headers}, b"{}")[0] == 200
    )
    assert http(gateway.port, "POST", "/invocations", {"Host": REBOUND, **headers}, b"{}")[0] == 403
