"""The security boundary of `mce up` and `mce serve` (issue 27), tried as an attacker would: raw HTTP with
a rebinding page's Host, a cross-site Content-Type and Origin, on every path; names that would become
paths; listening beyond loopback. Each test fails on the code before the boundary existed."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError
from conftest import Processes, aws_client, container_doc, endpoint_doc, metric, raw_exchange, sign
from prometheus_client.parser import text_string_to_metric_families
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


ARN = "arn:aws:sagemaker:us-east-1:000000000000"
ADMIN, SHOPPER = ("AKIDADMIN", "admin-secret"), ("AKIDSHOP", "shop-secret")


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[LocalSageMaker]:
    """mce up --access: an admin may do anything; the shopper may invoke and describe endpoint `shop`,
    create endpoints from configurations named team-*, and create inference components."""
    shopper = [
        {
            "Effect": "Allow",
            "Action": ["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"],
            "Resource": f"{ARN}:endpoint/shop",
        },
        {
            "Effect": "Allow",
            "Action": ["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"],
            "Resource": [f"{ARN}:endpoint/*", f"{ARN}:endpoint-config/team-*"],
        },
        {
            "Effect": "Allow",
            "Action": "sagemaker:CreateInferenceComponent",
            "Resource": [f"{ARN}:inference-component/*", f"{ARN}:model/team-*"],
        },
    ]
    keys = [
        {"AccessKeyId": ADMIN[0], "SecretAccessKey": ADMIN[1], "Name": "admin", "Policy": _allow("*")},
        {
            "AccessKeyId": SHOPPER[0],
            "SecretAccessKey": SHOPPER[1],
            "Name": "shopper",
            "Policy": {"Version": "2012-10-17", "Statement": shopper},
        },
    ]
    access = tmp_path / "access.yaml"
    access.write_text(json.dumps({"Keys": keys}))
    server = LocalSageMaker(tmp_path, None, None, "--access", str(access))
    yield server
    try:
        server.stop()
    finally:
        server.proc.kill()


def _allow(resource: str) -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": resource}]}


def signed_runtime(url: str, key: tuple[str, str]) -> Any:
    return aws_client("sagemaker-runtime", url, key=key)


def test_a_key_learns_nothing_of_endpoints_it_may_not_invoke(guarded: LocalSageMaker) -> None:
    """A Failed endpoint's status and FailureReason (its log lines, host paths) go only to keys that may
    invoke it; to others it is denied exactly as a name that does not exist."""
    admin = guarded.sagemaker(ADMIN)
    deploy(admin, "shop", ("AllTraffic", "test/echo:1", 1.0))
    deploy(admin, "doomed", ("AllTraffic", "test/broken:1", 1.0))
    for name in ("shop", "doomed"):
        with contextlib.suppress(WaiterError):
            admin.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1})
    shopper = signed_runtime(guarded.url, SHOPPER)
    assert (
        shopper.invoke_endpoint(EndpointName="shop", Body=b"{}")["ResponseMetadata"]["HTTPStatusCode"] == 200
    )
    answers = {}
    for name in ("doomed", "nowhere"):
        with pytest.raises(ClientError) as denied:
            shopper.invoke_endpoint(EndpointName=name, Body=b"{}")
        error = denied.value.response["Error"]
        assert error["Code"] == "AccessDeniedException", error
        answers[name] = error["Message"].replace(name, "NAME")
    assert answers["doomed"] == answers["nowhere"]
    assert "weights.bin" not in answers["doomed"]
    with pytest.raises(ClientError) as told:  # the admin may: it is told why
        signed_runtime(guarded.url, ADMIN).invoke_endpoint(EndpointName="doomed", Body=b"{}")
    assert "Failed" in told.value.response["Error"]["Message"]


def test_create_endpoint_and_components_authorize_what_they_are_made_from(guarded: LocalSageMaker) -> None:
    admin, shopper = guarded.sagemaker(ADMIN), guarded.sagemaker(SHOPPER)
    for model in ("team-m", "secret-m"):
        admin.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    for config in ("team-c", "secret-c"):
        admin.create_endpoint_config(
            EndpointConfigName=config, ProductionVariants=[{"VariantName": "v", "ModelName": "team-m"}]
        )
    with pytest.raises(ClientError) as denied:
        shopper.create_endpoint(EndpointName="mine", EndpointConfigName="secret-c")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert denied.value.response["Error"]["Message"].endswith(
        f"on resource: {ARN}:endpoint-config/secret-c because no identity-based policy allows the "
        "sagemaker:CreateEndpoint action"
    )
    assert admin.list_endpoints()["Endpoints"] == []
    assert shopper.create_endpoint(EndpointName="mine", EndpointConfigName="team-c")["EndpointArn"]
    with pytest.raises(ClientError) as no_model:
        shopper.create_inference_component(
            InferenceComponentName="ic",
            EndpointName="mine",
            Specification={"ModelName": "secret-m"},
            RuntimeConfig={"CopyCount": 1},
        )
    assert no_model.value.response["Error"]["Message"].endswith(
        f"on resource: {ARN}:model/secret-m because no identity-based policy allows the "
        "sagemaker:CreateInferenceComponent action"
    )


def test_metrics_show_a_key_only_the_endpoints_it_may_describe(guarded: LocalSageMaker) -> None:
    admin = guarded.sagemaker(ADMIN)
    deploy(admin, "shop", ("AllTraffic", "test/echo:1", 1.0))
    deploy(admin, "private", ("AllTraffic", "test/echo:1", 1.0))
    for name in ("shop", "private"):
        admin.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1})

    def endpoints(key: tuple[str, str]) -> set[str]:
        headers = sign(guarded.url + "/metrics", *key, body=b"", headers={}, method="GET")
        request = urllib.request.Request(guarded.url + "/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return {
            sample.labels["endpoint"]
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if "endpoint" in sample.labels
        }

    assert endpoints(ADMIN) == {"shop", "private"}
    assert endpoints(SHOPPER) == {"shop"}
