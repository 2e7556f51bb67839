"""The SageMaker runtime API on the wire: header names, limits, and response bytes built for the socket.

Errors go out exactly as botocore parses them (spec §1.3): the shape's status, `x-amzn-ErrorType: <Shape>`,
`x-amzn-RequestId`, and a JSON body of the shape's members. Constant header blocks are built at import;
per response only the variable parts are joined.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from typing import Final

from gateway.errors import GatewayError

# Request headers of InvokeEndpoint, lower-cased as the server stores them (spec §1.2).
CONTENT_TYPE: Final = b"content-type"
ACCEPT: Final = b"accept"
CUSTOM_ATTRIBUTES: Final = b"x-amzn-sagemaker-custom-attributes"
TARGET_MODEL: Final = b"x-amzn-sagemaker-target-model"
TARGET_VARIANT: Final = b"x-amzn-sagemaker-target-variant"
TARGET_CONTAINER: Final = b"x-amzn-sagemaker-target-container-hostname"
INFERENCE_ID: Final = b"x-amzn-sagemaker-inference-id"
CONTENT_LENGTH: Final = b"content-length"
EXPECT: Final = b"expect"

# The runtime API's paths: /endpoints/{EndpointName}/<action>
ENDPOINTS: Final = b"/endpoints/"
INVOCATIONS: Final = b"invocations"  # InvokeEndpoint
RESPONSE_STREAM: Final = b"invocations-response-stream"  # InvokeEndpointWithResponseStream
ASYNC_INVOCATIONS: Final = b"async-invocations"  # InvokeEndpointAsync
ACTIONS: Final = (INVOCATIONS, RESPONSE_STREAM, ASYNC_INVOCATIONS)
STREAM_ACCEPT: Final = b"x-amzn-sagemaker-accept"  # InvokeEndpointWithResponseStream's Accept (spec §1.5)
SESSION_ID: Final = b"x-amzn-sagemaker-session-id"
NEW_SESSION_ID: Final = b"x-amzn-sagemaker-new-session-id"
CLOSED_SESSION_ID: Final = b"x-amzn-sagemaker-closed-session-id"
INFERENCE_COMPONENT: Final = b"x-amzn-sagemaker-inference-component"
ENABLE_EXPLANATIONS: Final = b"x-amzn-sagemaker-enable-explanations"
PREFIX_AWARE_ID: Final = b"x-amzn-sagemaker-prefix-aware-id"

MAX_BODY: Final = 6 * 1024 * 1024  # InvokeEndpoint Body max 6291456 bytes (spec §1.2)
# A body up to this size is handled whole: an answer goes out in one write with its head (a larger one is
# streamed), a request goes to a container in one write, a container's error body is kept for
# OriginalMessage (and cut there).
WHOLE: Final = 64 * 1024
MAX_HEADER_VALUE: Final = 1024  # Content-Type, Accept, CustomAttributes, TargetModel (spec §1.2)
MAX_INFERENCE_ID: Final = 64
MAX_HOSTNAME: Final = 63

# The one production variant a local endpoint has; SageMaker's SDK names its default variant so.
VARIANT_NAME: Final = "AllTraffic"
# Runtime errors name an account; a local endpoint has none, so the conventional local placeholder: the
# account in ARNs and messages unless told (--account), plainly not real.
LOCAL_ACCOUNT: Final = "000000000000"

# header names as they come -> lower-cased, for the names seen first; read it before calling `lowered`
# (`LOWERED.get(name) or lowered(name)`): interpreted, a call costs more than the lowering it saves
LOWERED: Final[dict[bytes, bytes]] = {}
_REMEMBERED: Final = 256  # entries each of this module's first-come caches keeps (LOWERED, endpoint names)
# The names the gateway looks headers up by, each the very object its lookups use: a header stored under
# one of them is found by identity, with no comparison of bytes (compiled, one object per literal; D56).
_CANONICAL: Final = {
    name: name
    for name in (
        CONTENT_TYPE,
        ACCEPT,
        CUSTOM_ATTRIBUTES,
        TARGET_MODEL,
        TARGET_VARIANT,
        TARGET_CONTAINER,
        INFERENCE_ID,
        CONTENT_LENGTH,
        EXPECT,
        STREAM_ACCEPT,
        SESSION_ID,
        NEW_SESSION_ID,
        CLOSED_SESSION_ID,
        INFERENCE_COMPONENT,
        ENABLE_EXPLANATIONS,
        PREFIX_AWARE_ID,
        b"host",
        b"origin",
        b"transfer-encoding",
        b"authorization",
        b"x-amz-date",
        b"x-amz-content-sha256",
        b"x-amz-security-token",
        b"x-amz-target",
        b"traceparent",
    )
}


def lowered(name: bytes) -> bytes:
    """`name.lower()`, the same object each time for a name seen before (up to `_REMEMBERED` of them): a
    dict lookup is cheaper than lowering, and the object it returns has its hash already (D55); for a
    name the gateway reads, the object its lookups use (`_CANONICAL`)."""
    found = LOWERED.get(name)
    if found is None:
        found = name.lower()
        found = _CANONICAL.get(found, found)
        if len(LOWERED) < _REMEMBERED:
            LOWERED[name] = found
    return found


class Unheard:
    """No callbacks: what the parser of a closed connection (client or container) reports to; httptools
    calls only the callbacks an object defines. Swapped in for the live parser, which holds the
    connection's own callbacks, so a closed connection is freed at once, not by the cycle collector."""


_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}
_STATUS_LINES[530] = b"HTTP/1.1 530 Internal Dependency\r\n"


def ok_head(variant: str) -> bytes:
    """How a successful answer begins: its status line and the variant that answered it."""
    return b"HTTP/1.1 200 OK\r\nx-Amzn-Invoked-Production-Variant: " + variant.encode() + b"\r\n"


_JSON: Final = b"Content-Type: application/json\r\n"
_CLOSE: Final = b"Connection: close\r\n"
_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
_EVENT_STREAM: Final = b"\r\nContent-Type: application/vnd.amazon.eventstream"


_FIRST_ID: Final = 0x100000000000
_LAST_ID: Final = 0xFFFFFFFFFFFF


class RequestIds:
    """`x-amzn-RequestId` values shaped like UUIDs: a random prefix per process, then a counter.

    Unique within the process and unpredictable across processes, at a fraction of `uuid4`'s cost per
    request (one counter step instead of reading 16 random bytes).
    """

    def __init__(self) -> None:
        raw = os.urandom(12).hex()
        self._prefix = f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-{raw[16:20]}-".encode()
        self._bare = self._prefix.replace(b"-", b"")  # the prefix's 20 hex digits
        # the counter stays between _FIRST_ID and _LAST_ID: always 12 hex digits, so no padding to format
        self._last = _FIRST_ID | (int(raw[20:24], 16) << 32)

    def next(self) -> bytes:
        last = self._last
        last = self._last = last + 1 if last < _LAST_ID else _FIRST_ID
        return self._prefix + hex(last)[2:].encode()

    def traceparent(self, rid: bytes) -> bytes:
        """A W3C `traceparent` for a request that came with none: a fresh trace named after `rid` (one of
        this object's ids; its 32 hex digits), sampled."""
        trace = self._bare + rid[-12:]
        return b"00-" + trace + b"-" + trace[16:] + b"-01"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Status\r\n".encode()


def error_response(error: GatewayError, rid: bytes, *, close: bool = False) -> bytes:
    """A whole HTTP response for `error`, ready for `transport.write`."""
    error_type = b"x-amzn-ErrorType: " + error.code.encode() + b"\r\n"
    return _json(
        error.status, error_type, json.dumps(error.members(), ensure_ascii=True).encode(), rid, close
    )


JSON_TYPE = b"application/json"
AWS_JSON_TYPE = b"application/x-amz-json-1.1"  # the control plane's (AWS JSON 1.1)
AWS_JSON = b"Content-Type: application/x-amz-json-1.1\r\n"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


def control_error(error: GatewayError, rid: bytes, *, close: bool = False) -> bytes:
    """A refused control-plane request, in AWS JSON 1.1's shape (`__type`), whatever refused it: the
    control plane (a ControlError), or the front door (a signature, a limit)."""
    body = json.dumps({"__type": error.code, "message": error.message}, ensure_ascii=True).encode()
    return _json(error.status, b"", body, rid, close, content_type=AWS_JSON)


def _json(
    status: int, extra: bytes, body: bytes, rid: bytes, close: bool, content_type: bytes = _JSON
) -> bytes:
    return b"".join(
        (
            status_line(status),
            extra,
            b"x-amzn-RequestId: ",
            rid,
            b"\r\n",
            content_type,
            _CLOSE if close else b"",
            b"Content-Length: ",
            str(len(body)).encode(),
            b"\r\n\r\n",
            body,
        )
    )


def invocation_head(
    ok: bytes,
    rid: bytes,
    content_type: bytes | None,
    custom_attributes: bytes | None,
    *,
    length: int | None,
    close: bool,
    timing: bytes | None = None,
    session: bytes = b"",
    stream: bool = False,
) -> bytes:
    """The head of a successful InvokeEndpoint response, after `ok` (`ok_head`: which variant answered);
    `length=None` means a chunked body follows; `session`: the container's session header lines.
    `stream`: InvokeEndpointWithResponseStream's, whose body is an event stream (gateway.eventstream)
    and whose payload's type is X-Amzn-SageMaker-Content-Type."""
    # appended one by one, each line's CRLF with the next line's name: compiled, an append is a direct
    # call where extending by a tuple makes the tuple first
    parts = [ok, b"x-amzn-RequestId: ", rid]
    if timing is not None:
        parts.append(b"\r\nServer-Timing: ")
        parts.append(timing)
    if stream:
        parts.append(_EVENT_STREAM)
        if content_type is not None:
            parts.append(b"\r\nX-Amzn-SageMaker-Content-Type: ")
            parts.append(content_type)
    elif content_type is not None:
        parts.append(b"\r\nContent-Type: ")
        parts.append(content_type)
    if custom_attributes is not None:
        parts.append(b"\r\nX-Amzn-SageMaker-Custom-Attributes: ")
        parts.append(custom_attributes)
    parts.append(b"\r\n")
    if session:
        parts.append(session)
    if close:
        parts.append(_CLOSE)
    if length is None:
        parts.append(_CHUNKED)
        parts.append(b"\r\n")
    else:
        parts.append(b"Content-Length: ")
        parts.append(str(length).encode())
        parts.append(b"\r\n\r\n")
    return b"".join(parts)


# runtime API paths -> the EndpointName they name, for the paths seen first (as LOWERED)
_ENDPOINT_NAMES: Final[dict[bytes, bytes]] = {}


def endpoint_name(path: bytes) -> bytes | None:
    """The EndpointName of a runtime API path (`/endpoints/{EndpointName}/invocations`, ...), else None.
    Remembered for the first `_REMEMBERED` paths that name one: a lookup costs a quarter of the parse."""
    known = _ENDPOINT_NAMES.get(path)
    if known is not None:
        return known
    if not path.startswith(ENDPOINTS):
        return None
    name, slash, action = path[len(ENDPOINTS) :].partition(b"/")
    if not slash or action not in ACTIONS:
        return None
    if name and len(_ENDPOINT_NAMES) < _REMEMBERED:
        _ENDPOINT_NAMES[path] = name
    return name


def shown(value: bytes, limit: int = 100) -> str:
    """A client's bytes quoted in an error message: at most `limit` of them, undecodable ones replaced."""
    return value[:limit].decode("utf-8", "replace")


_TYPE_LINES = {JSON_TYPE: _JSON, AWS_JSON_TYPE: AWS_JSON}  # the common ones, made once


def document_response(
    status: int, content_type: bytes, body: bytes, rid: bytes, *, close: bool = False, extra: bytes = b""
) -> bytes:
    """A whole HTTP response the gateway made (/ping's, /metrics', a control-plane answer, a 202);
    `extra`: header lines."""
    line = _TYPE_LINES.get(content_type) or b"Content-Type: " + content_type + b"\r\n"
    return _json(status, extra, body, rid, close, content_type=line)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
