"""SigV4 authentication and IAM-style policies, with boto3 clients holding different keys (spec §6, §8)."""

from __future__ import annotations

import datetime
import http.client
import json
import subprocess
import sys
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import (
    Proc,
    Processes,
    aws_client,
    container_doc,
    endpoint_doc,
    multi_model_doc,
    sign,
    write_artifact,
)

ACCOUNT = "111122223333"
ENDPOINT_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/shop"
HOSTS = ("customIps-1", "common-a", "common-ab", "Common-b", "special-x", "other")
MULTI_MODEL = ("models-a", "common-mm")  # TargetModel is only for multi-model containers


def allow(
    condition: dict[str, Any] | None = None, resource: str = ENDPOINT_ARN, sid: str = "allow"
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": "sagemaker:InvokeEndpoint",
        "Resource": resource,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def deny(condition: dict[str, Any], sid: str = "deny") -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Deny", "Action": "sagemaker:*", "Resource": "*", "Condition": condition}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


KEYS: dict[str, dict[str, Any]] = {
    # the seed blog's first policy: only containers whose names start customIps or common
    "alice": policy(allow({"StringLike": {"sagemaker:TargetContainerHostname": ["customIps*", "common*"]}})),
    # the seed blog's second: everything, then an explicit deny for special*
    "bob": policy(
        allow({"StringLike": {"sagemaker:TargetContainerHostname": ["*"]}}),
        deny({"StringLike": {"sagemaker:TargetContainerHostname": ["special*"]}}),
    ),
    "carol": policy(allow({"StringLike": {"sagemaker:TargetContainerHostname": "common-?"}})),
    "erin": policy(allow({"StringLike": {"sagemaker:TargetModel": ["company_a/*"]}})),
    "frank": policy(allow({"StringLikeIfExists": {"sagemaker:TargetModel": ["company_a/*"]}})),
    "grace": policy(allow(), deny({"StringNotLike": {"sagemaker:TargetContainerHostname": ["common*"]}})),
    "heidi": policy(allow({"StringEquals": {"sagemaker:TargetContainerHostname": ["other"]}})),
    "ivan": policy(allow(resource="arn:aws:sagemaker:us-east-1:*:endpoint/elsewhere")),
    # monitoring: may describe the endpoint (what /metrics needs), not invoke it
    "monitor": policy({"Effect": "Allow", "Action": "sagemaker:DescribeEndpoint", "Resource": ENDPOINT_ARN}),
    "judy": policy(
        allow(
            {
                "StringLike": {"sagemaker:TargetContainerHostname": "common*"},
                "StringNotEquals": {"sagemaker:TargetModel": "company_a/secret.tar.gz"},
            }
        )
    ),
}


def key_id(name: str) -> str:
    return f"AKID{name.upper()}"


def secret(name: str) -> str:
    return f"secret-of-{name}"


@pytest.fixture(scope="module")
def gateway(module_procs: Processes) -> Iterator[Proc]:
    containers = [container_doc(host, module_procs.container(host).url) for host in HOSTS]
    prefix = module_procs.tmp / "models"
    for model in ("company_a/m1.tar.gz", "company_a/other.tar.gz"):
        write_artifact(prefix / model, {"weights.txt": model})
    containers += [multi_model_doc(host, module_procs.model_container().url, prefix) for host in MULTI_MODEL]
    access = {
        "Region": "us-east-1",
        "Account": ACCOUNT,
        "Keys": [
            {"AccessKeyId": key_id(name), "SecretAccessKey": secret(name), "Name": name, "Policy": document}
            for name, document in KEYS.items()
        ],
    }
    path = module_procs.tmp / "access.yaml"
    path.write_text(yaml.safe_dump(access))
    yield module_procs.gateway(endpoint_doc("Direct", containers, name="shop"), "--access", str(path))


def client(
    gateway: Proc,
    name: str,
    *,
    region: str = "us-east-1",
    secret_of: str | None = None,
    unsigned: bool = False,
) -> Any:
    config = (
        Config(retries={"max_attempts": 1}, signature_version=UNSIGNED)
        if unsigned
        else Config(retries={"max_attempts": 1})
    )
    key = (key_id(name), secret(secret_of or name))
    return aws_client("sagemaker-runtime", gateway.url, key=key, region=region, config=config)


def outcome(gateway: Proc, name: str, host: str, model: str | None = None) -> str:
    extra = {"TargetModel": model} if model else {}
    try:
        client(gateway, name).invoke_endpoint(
            EndpointName="shop", TargetContainerHostname=host, Body=b"{}", **extra
        )
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "allowed"


DENIED = "AccessDeniedException"
MATRIX = [
    # key, container, TargetModel, outcome
    ("alice", "customIps-1", None, "allowed"),
    ("alice", "common-a", None, "allowed"),
    ("alice", "special-x", None, DENIED),  # no statement allows it
    ("alice", "Common-b", None, DENIED),  # StringLike is case-sensitive
    ("bob", "other", None, "allowed"),
    ("bob", "common-a", None, "allowed"),
    ("bob", "special-x", None, DENIED),  # an explicit Deny beats the Allow
    ("carol", "common-a", None, "allowed"),  # ? is exactly one character
    ("carol", "common-ab", None, DENIED),
    ("erin", "models-a", "company_a/m1.tar.gz", "allowed"),
    ("erin", "other", "company_b/m1.tar.gz", DENIED),
    ("erin", "other", None, DENIED),  # the key is absent: the condition is false
    ("frank", "other", None, "allowed"),  # ...unless IfExists
    ("frank", "other", "company_b/m1.tar.gz", DENIED),
    ("grace", "common-ab", None, "allowed"),  # Deny with StringNotLike: all but common* denied
    ("grace", "other", None, DENIED),
    ("heidi", "other", None, "allowed"),
    ("heidi", "common-a", None, DENIED),
    ("ivan", "other", None, DENIED),  # its Allow is for another endpoint's ARN
    ("judy", "common-a", None, "allowed"),  # StringNotEquals with the key absent: true
    ("judy", "common-mm", "company_a/other.tar.gz", "allowed"),
    ("judy", "common-mm", "company_a/secret.tar.gz", DENIED),  # two operators: AND
    ("judy", "other", "company_a/other.tar.gz", DENIED),
]


@pytest.mark.parametrize(("name", "host", "model", "expected"), MATRIX)
def test_decision_matrix(gateway: Proc, name: str, host: str, model: str | None, expected: str) -> None:
    assert outcome(gateway, name, host, model) == expected


def test_denial_wording_and_status(gateway: Proc) -> None:
    with pytest.raises(ClientError) as caught:
        client(gateway, "bob").invoke_endpoint(
            EndpointName="shop", TargetContainerHostname="special-x", Body=b"{}"
        )
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Message"] == (
        f"User: arn:aws:iam::{ACCOUNT}:user/bob is not authorized to perform: sagemaker:InvokeEndpoint on "
        "resource: "
        f"{ENDPOINT_ARN} with an explicit deny in an identity-based policy"
    )


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"unsigned": True}, "MissingAuthenticationTokenException", "Missing Authentication Token"),
        ({"secret_of": "mallory"}, "InvalidSignatureException", "does not match the signature you provided"),
        ({"region": "eu-west-1"}, "InvalidSignatureException", "scoped to a valid region"),
    ],
)
def test_authentication_failures(gateway: Proc, kwargs: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(ClientError) as caught:
        client(gateway, "bob", **kwargs).invoke_endpoint(
            EndpointName="shop", TargetContainerHostname="other", Body=b"{}"
        )
    assert caught.value.response["Error"]["Code"] == code
    assert message in caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_key(gateway: Proc) -> None:
    assert outcome(gateway, "mallory", "other") == "UnrecognizedClientException"


def test_strangers_learn_nothing_about_the_containers(gateway: Proc) -> None:
    unsigned = client(gateway, "bob", unsigned=True)
    with pytest.raises(ClientError) as caught:
        unsigned.invoke_endpoint(EndpointName="shop", TargetContainerHostname="nosuch", Body=b"{}")
    assert caught.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"


def signed_post(
    gateway: Proc,
    *,
    body: bytes,
    send_body: bytes | None = None,
    service: str = "sagemaker",
    when: datetime.datetime | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request signed by hand with botocore's signer: for a chosen time, service, or a body swapped
    after."""
    url = f"http://127.0.0.1:{gateway.port}/endpoints/shop/invocations"
    headers = sign(
        url,
        key_id("bob"),
        secret("bob"),
        body=body,
        service=service,
        when=when,
        headers={"X-Amzn-SageMaker-Target-Container-Hostname": "other"},
    )
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/endpoints/shop/invocations",
            body=send_body if send_body is not None else body,
            headers=headers,
        )
        response = connection.getresponse()
        return response.status, {
            "type": response.getheader("x-amzn-ErrorType"),
            "body": json.loads(response.read() or b"{}"),
        }
    finally:
        connection.close()


def test_a_hand_signed_request_is_accepted(gateway: Proc) -> None:
    status, _ = signed_post(gateway, body=b'{"x": 1}')
    assert status == 200


def test_tampered_body(gateway: Proc) -> None:
    status, answer = signed_post(gateway, body=b'{"amount": 1}', send_body=b'{"amount": 9}')
    assert status == 403 and answer["type"] == "InvalidSignatureException"


@pytest.mark.parametrize("minutes", [-10, 10])
def test_signature_outside_the_clock_skew_window(gateway: Proc, minutes: int) -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    status, answer = signed_post(gateway, body=b"{}", when=when)
    assert status == 403 and answer["type"] == "InvalidSignatureException"
    assert ("expired" if minutes < 0 else "not yet current") in answer["body"]["Message"]


def test_wrong_service_in_the_scope(gateway: Proc) -> None:
    status, answer = signed_post(gateway, body=b"{}", service="s3")
    assert status == 403 and "scoped to correct service: 'sagemaker'" in answer["body"]["Message"]


def test_ping_stays_open(gateway: Proc) -> None:
    import urllib.request

    with urllib.request.urlopen(gateway.url + "/ping", timeout=10) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            {"Effect": "Alow", "Action": "*", "Resource": "*"},
            "Keys[0].Policy.Statement[0].Effect: 'Alow' is not Allow or Deny",
        ),
        (
            {"Effect": "Allow", "Resource": "*"},
            "Keys[0].Policy.Statement[0].Action: give exactly one of Action and NotAction",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringMatches": {"sagemaker:TargetModel": "x"}},
            },
            "Keys[0].Policy.Statement[0].Condition.StringMatches: not supported",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringLike": {"aws:SourceIp": "x"}},
            },
            "Keys[0].Policy.Statement[0].Condition.StringLike.aws:SourceIp: not a condition key",
        ),
    ],
)
def test_a_bad_policy_is_refused_at_start_up(tmp_path: Path, statement: dict[str, Any], message: str) -> None:
    access = tmp_path / "access.yaml"
    access.write_text(
        yaml.safe_dump(
            {"Keys": [{"AccessKeyId": "AKID", "SecretAccessKey": "s", "Policy": policy(statement)}]}
        )
    )
    document = tmp_path / "endpoint.yaml"
    document.write_text(yaml.safe_dump(endpoint_doc("Direct", [container_doc("a", "http://127.0.0.1:1")])))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", str(document), "--port", "0", "--access", str(access)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_from_the_environment_must_be_set(tmp_path: Path) -> None:
    access = tmp_path / "access.yaml"
    access.write_text(
        yaml.safe_dump(
            {
                "Keys": [
                    {
                        "AccessKeyId": "AKID",
                        "SecretAccessKeyFromEnv": "MCE_TEST_UNSET_SECRET",
                        "Policy": policy(allow()),
                    }
                ]
            }
        )
    )
    from gateway.access import load_access
    from gateway.errors import DocumentError

    with pytest.raises(
        DocumentError, match=r"Keys\[0\].SecretAccessKeyFromEnv: \$MCE_TEST_UNSET_SECRET is not set"
    ):
        load_access(access)


def test_cost_of_checking_a_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a threshold: prints what one check costs here, for the record."""
    from gateway.access import load_access

    access_file = tmp_path / "access.yaml"
    access_file.write_text(
        yaml.safe_dump(
            {
                "Account": ACCOUNT,
                "Keys": [
                    {
                        "AccessKeyId": key_id("bob"),
                        "SecretAccessKey": secret("bob"),
                        "Name": "bob",
                        "Policy": KEYS["bob"],
                    }
                ],
            }
        )
    )
    access = load_access(access_file)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    request = AWSRequest(
        method="POST",
        url="http://h:1/endpoints/shop/invocations",
        data=b"x" * 1024,
        headers={"Host": "h:1", "X-Amz-Date": stamp, "X-Amzn-SageMaker-Target-Container-Hostname": "other"},
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key_id("bob"), secret("bob")), "sagemaker", "us-east-1")
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    headers = {k.lower().encode(): v.encode() for k, v in request.headers.items()}
    headers[b"authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id('bob')}/{stamp[:8]}/us-east-1/sagemaker/aws4_request, "
        f"SignedHeaders=host;x-amz-date;x-amzn-sagemaker-target-container-hostname, Signature={signature}"
    ).encode()
    access.check(b"POST", b"/endpoints/shop/invocations", headers, b"x" * 1024, "shop")  # passes
    runs = 2000
    seconds = timeit.timeit(
        lambda: access.check(b"POST", b"/endpoints/shop/invocations", headers, b"x" * 1024, "shop"),
        number=runs,
    )
    with capsys.disabled():
        print(f"\n[access] one SigV4 check + policy decision: {seconds / runs * 1e6:.0f} us")


def test_denials_are_counted_in_metrics(gateway: Proc) -> None:
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    outcome(gateway, "bob", "special-x")  # an explicit deny
    outcome(gateway, "alice", "other")  # no allow
    url = gateway.url + "/metrics"  # under --access, metrics need a signature too (hardening #9)
    refused = urllib.request.Request(
        url, headers=sign(url, key_id("alice"), secret("alice"), body=b"", headers={}, method="GET")
    )
    with pytest.raises(urllib.error.HTTPError) as denied:  # alice may invoke, not describe (issue 27)
        urllib.request.urlopen(refused, timeout=10)
    with denied.value:
        assert denied.value.code == 403
    scrape = urllib.request.Request(
        url, headers=sign(url, key_id("monitor"), secret("monitor"), body=b"", headers={}, method="GET")
    )
    with urllib.request.urlopen(scrape, timeout=10) as response:
        samples = [s for f in text_string_to_metric_families(response.read().decode()) for s in f.samples]
    counts = {s.labels["reason"]: s.value for s in samples if s.name == "mce_access_denials_total"}
    assert counts["explicit deny"] >= 1 and counts["no allow"] >= 1
    # and each denial is an invocation answered 4XX (it used to count as no error)
    errors = [
        s.value
        for s in samples
        if s.name == "sagemaker_invocation_4xx_errors_total" and s.labels["container"] == ""
    ]
    assert errors and errors[0] >= sum(counts.values())


def test_a_signed_request_that_breaks_a_rule_gets_the_validation_error(gateway: Proc) -> None:
    """The request is refused for its hostname, but its body is still read to check the signature first."""
    assert outcome(gateway, "bob", "nosuch") == "ValidationError"
