"""The gateway's one error tree: every failure a client can see, with its SageMaker wire identity.

    GatewayError                      (never raised itself)
    ├── ValidationError               400  the request breaks the runtime API's rules
    ├── AuthenticationError           403  MissingAuthenticationToken, IncompleteSignature,
    │                                      InvalidSignature, UnrecognizedClient (gateway.access)
    ├── AccessDenied                  403  AccessDeniedException: a policy does not allow it
    ├── UnknownOperation              404  no such route on the gateway
    ├── RequestRefused                408  RequestTimeout, 414 URITooLong, 431 RequestHeaderFieldsTooLarge:
    │                                      the request broke a limit of the front door (gateway.limits)
    ├── ModelError                    424  a container answered non-2xx, or could not be talked to
    ├── ModelNotReady                 429  ModelNotReadyException
    ├── InternalFailure               500  a fault of the gateway itself
    ├── ServiceUnavailable            503  the gateway holds all it may (connections, buffered bodies)
    └── ControlError                  400  a refused control-plane call (gateway.control), AWS JSON 1.1's
        │                                  shape: `__type` = code
        ├── InvalidRequest                 ValidationException: a constraint, a missing resource, a state
        ├── SerializationFailure           SerializationException: the body is not the operation's JSON
        ├── PolicyDenied                   AccessDeniedException: a policy does not allow the operation
        ├── StateBusy                 503  ServiceUnavailable: another process holds the state database
        ├── StateFull                 500  InternalFailure: the disk under the state database is full
        └── UnknownControlOperation        UnknownOperationException: an X-Amz-Target not served here

Each class knows its HTTP status and the SageMaker error code (the botocore shape name, spec §1.3);
library code raises these and each front door turns them into its wire form in one place
(`gateway.wire.error_response` for HTTP; `gateway.wire.control_error` for a control-plane request, whatever
refused it).

`DocumentError` is separate: it is raised at start-up (a bad endpoint or access document), never on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class GatewayError(Exception):
    """A failure with a SageMaker runtime error shape."""

    status: int = 500
    code: str = "InternalFailure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def members(self) -> dict[str, object]:
        """The modelled members of the error shape, as botocore reads them from the JSON body."""
        return {"Message": self.message}


class ValidationError(GatewayError):
    status = 400
    code = "ValidationError"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code  # SageMaker's finer code, in the body as ErrorCode, where it has one

    def members(self) -> dict[str, object]:
        members: dict[str, object] = {"Message": self.message}
        if self.error_code is not None:
            members["ErrorCode"] = self.error_code
        return members


class AuthenticationError(GatewayError):
    """The request's SigV4 signature is missing, malformed or wrong; `code` is AWS's name for the case."""

    status = 403

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AccessDenied(GatewayError):
    status = 403
    code = "AccessDeniedException"


class UnknownOperation(GatewayError):
    # Not a modelled shape: botocore raises a plain ClientError with this code, as AWS does for an
    # unknown rest-json route.
    status = 404
    code = "UnknownOperationException"


class RequestRefused(GatewayError):
    """The request cannot be read within the front door's limits (gateway.limits). None is a modelled
    sagemaker-runtime shape, so botocore raises a ClientError with `code`, as for AWS's own 4xx of this
    kind."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ModelError(GatewayError):
    """A container failed: it answered non-2xx, timed out, refused the connection or broke the protocol.

    `original_status` is the container's HTTP status when it answered one; it is left out of the wire
    body when there was no answer (timeout, refused connection), rather than inventing a number.
    """

    status = 424
    code = "ModelError"

    def __init__(
        self,
        message: str,
        *,
        container: str,
        original_status: int | None = None,
        original_message: str | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.container = container
        self.original_status = original_status
        self.original_message = original_message
        self.timed_out = timed_out  # no answer within its timeout (a stream: no bytes within it)
        self.log_stream_arn: str | None = None

    def locate(self, log_stream_arn: str, file: Path | None) -> None:
        """The container's log: SageMaker's name for it and, where mce launched it, the local file."""
        self.log_stream_arn = log_stream_arn
        if file is not None:
            self.message += f" Its log: {file}"

    def members(self) -> dict[str, object]:
        members: dict[str, object] = {"Message": self.message}
        if self.original_status is not None:
            members["OriginalStatusCode"] = self.original_status
        if self.original_message is not None:
            members["OriginalMessage"] = self.original_message
        if self.log_stream_arn is not None:
            members["LogStreamArn"] = self.log_stream_arn
        return members


class ModelNotReady(GatewayError):
    status = 429
    code = "ModelNotReadyException"


class Throttled(GatewayError):
    """More invocations at once than a serverless variant's MaxConcurrency (gateway.serverless): the code
    boto3 users see from AWS, which botocore retries."""

    status = 429
    code = "ThrottlingException"


class InternalFailure(GatewayError):
    status = 500
    code = "InternalFailure"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "ServiceUnavailable"


class ControlError(GatewayError):
    """A refused control-plane call: HTTP 400 with `__type` = `code` (the botocore shape name)."""

    status = 400


class InvalidRequest(ControlError):
    code = "ValidationException"


class SerializationFailure(ControlError):
    code = "SerializationException"


class PolicyDenied(ControlError):
    """AccessDenied of a control-plane operation: AWS JSON services answer it 400, not 403."""

    code = "AccessDeniedException"


class StateBusy(ControlError):
    """Retryable: botocore retries a 503 by itself."""

    status = 503
    code = "ServiceUnavailable"


class StateFull(ControlError):
    status = 500
    code = "InternalFailure"


class UnknownControlOperation(ControlError):
    code = "UnknownOperationException"


@dataclass(frozen=True, slots=True)
class DocumentIssue:
    """One broken rule in an endpoint document: where (a field path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DocumentError(Exception):
    """A document (the endpoint, the access file) cannot be used; carries every issue found, not just the
    first."""

    def __init__(self, source: str, issues: list[DocumentIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} problem(s):\n{lines}")
