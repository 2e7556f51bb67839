"""The HTTP front door at the byte level: what boto3 never sends, but a client or an attacker can."""

from __future__ import annotations

import json
import socket
import weakref
from collections.abc import Iterator

import pytest
from conftest import Proc, Processes, container_doc, endpoint_doc

PATH = b"/endpoints/demo/invocations"


@pytest.fixture(scope="module")
def gateway(module_procs: Processes) -> Iterator[Proc]:
    echo = module_procs.container("echo")
    yield module_procs.gateway(endpoint_doc("Direct", [container_doc("echo", echo.url)]))


def connect(gateway: Proc) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    return sock


# What a recv brought beyond the response being read: pipelined answers can share one segment.
_unread: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body; bytes of the next one are kept for it."""
    data = _unread.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed after {data!r}"
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        assert more
        rest += more
    if len(rest) > length:
        _unread[sock] = rest[length:]
    return status, headers, rest[:length]


def request(target: bytes = b"echo", body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return (
        b"POST " + PATH + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"X-Amzn-SageMaker-Target-Container-Hostname: "
        + target
        + b"\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def test_oversized_content_length_is_refused_before_the_body_is_sent(gateway: Proc) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST " + PATH + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Amzn-SageMaker-Target-Container-Hostname: echo\r\n"
            b"Content-Length: 7340032\r\n\r\n"
        )
        status, headers, body = read_response(sock)  # answered with no body sent at all
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationError"
    assert headers["connection"] == "close"
    assert "7340032 bytes" in json.loads(body)["Message"]


def test_chunked_body_over_the_limit_is_refused(gateway: Proc) -> None:
    piece = b"x" * 1024 * 1024
    with connect(gateway) as sock:
        sock.sendall(
            b"POST " + PATH + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Amzn-SageMaker-Target-Container-Hostname: echo\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(7):
                sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may stop reading before we finish sending
        status, headers, body = read_response(sock)
    assert "over 6291456 bytes" in json.loads(body)["Message"]
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationError"


def test_chunked_body_within_the_limit_is_served(gateway: Proc) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST " + PATH + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Amzn-SageMaker-Target-Container-Hostname: echo\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
        )
        status, _, body = read_response(sock)
    assert status == 200 and json.loads(body)["a"] == 1


def test_malformed_request_gets_a_validation_error_not_a_hang(gateway: Proc) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationError"
    assert "Malformed HTTP request" in json.loads(body)["Message"]


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"GET " + PATH, 404), (b"POST /models", 404), (b"DELETE /ping", 404), (b"GET /", 404)],
)
def test_unknown_routes_are_unknown_operations(gateway: Proc, line: bytes, status: int) -> None:
    with connect(gateway) as sock:
        sock.sendall(line + b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        got, headers, body = read_response(sock)
    assert got == status
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert "GET /ping" in json.loads(body)["Message"]


def test_keep_alive_and_pipelined_requests_are_answered_in_order(gateway: Proc) -> None:
    bodies = [json.dumps({"n": n}).encode() for n in range(5)]
    with connect(gateway) as sock:
        sock.sendall(b"".join(request(body=body) for body in bodies))
        answers = [read_response(sock) for _ in bodies]
        # the connection stays open for more
        sock.sendall(request(target=b"nobody"))
        late = read_response(sock)
    assert [json.loads(body)["n"] for _, _, body in answers] == list(range(5))
    assert late[0] == 400


def test_expect_100_continue(gateway: Proc) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST " + PATH + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Amzn-SageMaker-Target-Container-Hostname: echo\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"  # nothing else can come before the body
        sock.sendall(b"{}")
        status, _, _ = read_response(sock)
    assert status == 200


def test_connection_close_is_honoured(gateway: Proc) -> None:
    with connect(gateway) as sock:
        sock.sendall(request(extra=b"Connection: close\r\n"))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(1024) == b""


def test_error_wire_shape_matches_botocore_expectations(gateway: Proc) -> None:
    with connect(gateway) as sock:
        sock.sendall(request(target=b"bad_name"))
        status, headers, body = read_response(sock)
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationError"
    assert headers["content-type"] == "application/json"
    assert len(headers["x-amzn-requestid"]) == 36
    assert set(json.loads(body)) == {"Message"}
