"""Who may invoke what: SigV4 authentication and IAM-style policies per access key (spec §6, §8). Off unless
set.

The access file (`mce serve|up --access FILE`) lists access keys, each with its secret (inline, or the name of
an environment variable holding it) and its identity policies:

    Region: us-east-1            # the region requests must be signed for (default us-east-1)
    Account: "111122223333"      # for the endpoint's ARN (default 000000000000)
    MaxClockSkewSeconds: 300     # how far X-Amz-Date may be from now (AWS: 5 minutes)
    Keys:
      - AccessKeyId: AKIDEXAMPLE
        SecretAccessKeyFromEnv: ALICE_SECRET    # or SecretAccessKey: "..."
        Name: alice
        Policy: {Version: "2012-10-17", Statement: [...]}    # one policy or a list

A request is authenticated by recomputing its signature with botocore's SigV4 signer (service `sagemaker`,
the request's own X-Amz-Date and signed headers, the body's SHA-256) and comparing in constant time, then
authorized for `sagemaker:InvokeEndpoint` on `arn:aws:sagemaker:<region>:<account>:endpoint/<name>` with the
condition keys `sagemaker:TargetContainerHostname` and `sagemaker:TargetModel`. The signature is bound to
the body the gateway received: an `X-Amz-Content-SHA256` that is not that body's SHA-256 (`UNSIGNED-PAYLOAD`
included) is refused, because botocore's canonical request trusts that header instead of hashing the body.
The local SageMaker's control plane (`mce up`) authorizes each operation as IAM does: the action
`sagemaker:<Operation>` (CreateEndpoint, ...) on the ARN of the model, endpoint configuration or endpoint
it names (`*` for the List operations), in this file's region and account. Every other operation but
`GET /ping` (`/metrics`, and unknown paths) needs a valid signature by any key of the file, and no policy.
Failures answer what AWS answers (403 with MissingAuthenticationTokenException,
IncompleteSignatureException, InvalidSignatureException, UnrecognizedClientException,
AccessDeniedException). Secrets are never logged.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from gateway.endpoint import document_issue
from gateway.errors import AccessDenied, AuthenticationError, DocumentError, DocumentIssue
from gateway.policy import Policy, PolicyError, parse_policies

logger = logging.getLogger(__name__)

ACTION = "sagemaker:InvokeEndpoint"  # InvokeEndpointWithResponseStream's too
ASYNC_ACTION = "sagemaker:InvokeEndpointAsync"
SERVICE = "sagemaker"  # the signing name of sagemaker-runtime (spec §1.1)
_TIME = "%Y%m%dT%H%M%SZ"


class _KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    AccessKeyId: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    SecretAccessKey: str | None = None
    SecretAccessKeyFromEnv: str | None = None
    Name: str | None = None
    Policy: object


class _AccessSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    Region: str = "us-east-1"
    Account: Annotated[str, StringConstraints(pattern=r"^\d{12}$")] = "000000000000"
    MaxClockSkewSeconds: Annotated[float, Field(gt=0, le=3600)] = 300
    Keys: list[_KeySpec] = Field(min_length=1)


@dataclass(frozen=True)
class Key:
    key_id: str
    name: str
    signer: SigV4Auth
    policy: Policy


class Access:
    """The access keys of one endpoint, and the check every invocation passes before it is routed."""

    def __init__(self, keys: dict[str, Key], *, region: str, account: str, skew: float) -> None:
        self.keys = keys
        self.region = region
        self.account = account
        self.skew = datetime.timedelta(seconds=skew)
        self.denials: collections.Counter[tuple[str, str]] = collections.Counter()  # (key id, reason)

    def resource(self, endpoint: str) -> str:
        return self.arn("endpoint", endpoint)

    def check(
        self,
        method: bytes,
        url: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        endpoint: str,
        *,
        action: str | None = ACTION,
        now: datetime.datetime | None = None,
    ) -> Key:
        """The key that signed the request; AuthenticationError unless it is signed by a key of the file,
        AccessDenied unless that key's policy allows `action` (None: no action to authorize) on
        `endpoint`. `headers` are the request's head, never its trailers: the same map the request was
        routed by."""
        key = self._authenticate(method, url, headers, body, now or datetime.datetime.now(datetime.UTC))
        if action is None:
            return key
        context = {}
        for header, condition_key in (
            (b"x-amzn-sagemaker-target-container-hostname", "sagemaker:targetcontainerhostname"),
            (b"x-amzn-sagemaker-target-model", "sagemaker:targetmodel"),
        ):
            value = headers.get(header)
            if value is not None:
                context[condition_key] = value.decode("latin-1")
        self.authorize(key, action, self.resource(endpoint), context)
        return key

    def authorize(self, key: Key, action: str, resource: str, context: dict[str, str] | None = None) -> None:
        """AccessDenied, in IAM's words, unless `key`'s policy allows `action` on `resource` (an ARN, or
        "*" for the List operations of the control plane)."""
        context = context or {}
        decision = key.policy.decide(action, resource, context)
        if decision.allowed:
            return
        self.denials[(key.key_id, "explicit deny" if decision.explicit_deny else "no allow")] += 1
        logger.warning(
            "access denied: key %s (%s) %s on %s container %s model %s: %s",
            key.key_id,
            key.name,
            action,
            resource,
            context.get("sagemaker:targetcontainerhostname", "-"),
            context.get("sagemaker:targetmodel", "-"),
            f"explicit deny in {decision.statement}" if decision.explicit_deny else "no statement allows it",
        )
        why = (
            "with an explicit deny in an identity-based policy"
            if decision.explicit_deny
            else (f"because no identity-based policy allows the {action} action")
        )
        # AWS's wording for an IAM denial (spec §1.3)
        raise AccessDenied(
            f"User: arn:aws:iam::{self.account}:user/{key.name} is not authorized to perform: {action} "
            f"on resource: {resource} {why}"
        )

    def allows(self, key: Key, action: str, resource: str) -> bool:
        """Whether `key`'s policy allows `action` on `resource`, without a denial counted or logged (what a
        key is shown, rather than what it asked for: /metrics)."""
        return key.policy.decide(action, resource, {}).allowed

    def arn(self, kind: str, name: str) -> str:
        """A control-plane resource's ARN as policies name it (`kind`: model, endpoint-config, endpoint)."""
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def _authenticate(
        self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes, now: datetime.datetime
    ) -> Key:
        authorization = headers.get(b"authorization")
        if authorization is None:
            self.denials[("-", "unsigned")] += 1
            raise AuthenticationError("MissingAuthenticationTokenException", "Missing Authentication Token")
        algorithm, _, rest = authorization.decode("latin-1").partition(" ")
        fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
        credential, signed, signature = (
            fields.get("Credential"),
            fields.get("SignedHeaders"),
            fields.get("Signature"),
        )
        if algorithm != "AWS4-HMAC-SHA256" or not credential or not signed or not signature:
            raise AuthenticationError(
                "IncompleteSignatureException",
                "Authorization header requires AWS4-HMAC-SHA256 with Credential, SignedHeaders and "
                "Signature.",
            )
        key_id, _, scope = credential.partition("/")
        date, region, service, terminal = ([*scope.split("/"), "", "", "", ""])[:4]
        key = self.keys.get(key_id)
        if key is None:
            self.denials[(key_id, "unknown key")] += 1
            raise AuthenticationError(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if service != SERVICE or terminal != "aws4_request":
            raise AuthenticationError(
                "InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'."
            )
        if region != self.region:
            raise AuthenticationError(
                "InvalidSignatureException", "Credential should be scoped to a valid region."
            )
        stamp = headers.get(b"x-amz-date", b"").decode("latin-1")
        try:
            signed_at = datetime.datetime.strptime(stamp, _TIME).replace(tzinfo=datetime.UTC)
        except ValueError:
            raise AuthenticationError(
                "IncompleteSignatureException", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ."
            ) from None
        if date != stamp[:8]:
            raise AuthenticationError(
                "InvalidSignatureException", "Credential should be scoped to the date of X-Amz-Date."
            )
        if signed_at < now - self.skew:
            self.denials[(key_id, "expired")] += 1
            raise AuthenticationError(
                "InvalidSignatureException",
                f"Signature expired: {stamp} is now earlier than {(now - self.skew).strftime(_TIME)} "
                f"({now.strftime(_TIME)} - {self.skew.total_seconds():g} s.)",
            )
        if signed_at > now + self.skew:
            raise AuthenticationError(
                "InvalidSignatureException",
                f"Signature not yet current: {stamp} is still later than "
                f"{(now + self.skew).strftime(_TIME)}.",
            )
        names = signed.split(";")
        if "host" not in names:
            raise AuthenticationError("IncompleteSignatureException", "SignedHeaders must include host.")
        declared = headers.get(b"x-amz-content-sha256")
        if declared is not None and declared != hashlib.sha256(body).hexdigest().encode():
            # botocore's canonical request takes this header's value instead of hashing the body: unchecked,
            # a signature would not bind the body at all
            self.denials[(key_id, "bad signature")] += 1
            if declared == b"UNSIGNED-PAYLOAD":
                raise AuthenticationError(
                    "InvalidSignatureException",
                    "UNSIGNED-PAYLOAD is not accepted: the signature must cover the body.",
                )
            raise AuthenticationError(
                "InvalidSignatureException",
                "The X-Amz-Content-SHA256 header does not match the SHA-256 of the request body.",
            )
        request = AWSRequest(
            method=method.decode("latin-1"),
            url="http://" + headers.get(b"host", b"").decode("latin-1") + url.decode("latin-1"),
            data=body,
            headers={name: headers.get(name.encode(), b"").decode("latin-1") for name in names},
        )
        request.context["timestamp"] = stamp
        expected = key.signer.signature(
            key.signer.string_to_sign(request, key.signer.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, signature):
            self.denials[(key_id, "bad signature")] += 1
            raise AuthenticationError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your "
                "AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.",
            )
        return key


def load_access(path: str | Path) -> Access:
    """Read and check an access file; DocumentError with every problem, naming the key, statement and
    field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        spec = _AccessSpec.model_validate(raw)
    except OSError as exc:
        raise DocumentError(source, [DocumentIssue("", f"cannot read the file: {exc.strerror}")]) from exc
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DocumentError(source, [DocumentIssue("", f"not valid YAML/JSON: {exc}")]) from exc
    except PydanticValidationError as exc:
        raise DocumentError(source, [document_issue(error) for error in exc.errors()]) from None
    issues: list[DocumentIssue] = []
    keys: dict[str, Key] = {}
    for index, item in enumerate(spec.Keys):
        where = f"Keys[{index}]"
        secret = item.SecretAccessKey
        if (secret is None) == (item.SecretAccessKeyFromEnv is None):
            issues.append(
                DocumentIssue(where, "give exactly one of SecretAccessKey and SecretAccessKeyFromEnv")
            )
            continue
        if item.SecretAccessKeyFromEnv is not None:
            secret = os.environ.get(item.SecretAccessKeyFromEnv)
            if not secret:
                issues.append(
                    DocumentIssue(
                        f"{where}.SecretAccessKeyFromEnv", f"${item.SecretAccessKeyFromEnv} is not set"
                    )
                )
                continue
        if item.AccessKeyId in keys:
            issues.append(DocumentIssue(f"{where}.AccessKeyId", f"{item.AccessKeyId} is listed twice"))
            continue
        try:
            policy = parse_policies(item.Policy, f"{where}.Policy")
        except PolicyError as exc:
            issues.append(DocumentIssue("", str(exc)))
            continue
        assert secret is not None
        keys[item.AccessKeyId] = Key(
            key_id=item.AccessKeyId,
            name=item.Name or item.AccessKeyId,
            signer=SigV4Auth(Credentials(item.AccessKeyId, secret), SERVICE, spec.Region),
            policy=policy,
        )
    if issues:
        raise DocumentError(source, issues)
    return Access(keys, region=spec.Region, account=spec.Account, skew=spec.MaxClockSkewSeconds)
