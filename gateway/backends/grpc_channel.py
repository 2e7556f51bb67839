"""What every gRPC backend shares: an insecure loopback channel, and gRPC failures as `ModelError`.

A gRPC status becomes the HTTP status a SageMaker client reasons in (`OriginalStatusCode`), with the status
name kept in the message; a channel that cannot connect, or a deadline that passes, reads like the same
failure over HTTP (docs/decisions.md D4, D11).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import grpc

from gateway.backends.base import error_status, unreachable
from gateway.errors import ModelError
from gateway.invocation import Invocation

MAX_MESSAGE = 16 * 1024 * 1024  # above the API's 6 MiB request and any answer we relay

# gRPC status -> HTTP status, after the mapping gRPC documents for HTTP gateways (google.rpc.Code).
_HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def target(url: str) -> str:
    """`grpc://host:port` as grpc's `host:port` target."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port if parts.port is not None else 80}"


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.enable_retries", 0),  # a retried inference is the caller's choice, not ours
        ],
    )


def metadata(call: Invocation) -> tuple[tuple[str, str], ...]:
    """What a gRPC call carries besides its message: the W3C trace context, when there is one."""
    if call.traceparent is None:
        return ()
    return (("traceparent", call.traceparent.decode("latin-1")),)


def failure(
    container: str,
    address: str,
    error: grpc.aio.AioRpcError,
    timeout: float,
    body: Callable[[grpc.StatusCode, str], bytes] | None = None,
) -> ModelError:
    """A failed call as the ModelError a SageMaker client would see. `body`: the error body a protocol's
    HTTP API gives for the same failure (default: the status name and details)."""
    code = error.code()
    details = error.details() or ""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return unreachable(container, address, f"did not answer within {timeout:g} s")
    if code is grpc.StatusCode.UNAVAILABLE and _is_connect_failure(details):
        return unreachable(container, address, f"refused the connection ({details})")
    text = body(code, details) if body is not None else f"gRPC {code.name}: {details}".encode()
    return error_status(container, _HTTP_STATUS.get(code, 500), text)


def health_failure(address: str, error: grpc.aio.AioRpcError) -> str:
    return f"{address} gRPC {error.code().name}: {error.details()}"


def _is_connect_failure(details: str) -> bool:
    text = details.lower()
    return "connect" in text or "connection refused" in text or "unreachable" in text
