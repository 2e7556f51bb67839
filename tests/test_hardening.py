"""The front door against hostile and broken clients: raw sockets where boto3 cannot send the bytes.

Each test here failed before the hardening issue (#13) and names the item it covers.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import Proc, Processes, container_doc, endpoint_doc, posts, raw_exchange, sign, start_process

ALICE = ("AKIDALICE", "alice-secret")  # may invoke alpha only
BOB = ("AKIDBOB", "bob-secret")  # may invoke anything, with an explicit Deny on bravo
INVOKE = "/endpoints/shop/invocations"


def statuses(raw: bytes) -> list[int]:
    """The status of each response in `raw`, read one response at a time by its Content-Length."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
        assert match, f"not an HTTP response: {raw[:100]!r}"
        found.append(int(match.group(1)))
        length = re.search(rb"(?im)^content-length: (\d+)", head)
        raw = rest[int(length.group(1)) :] if length else b""
    return found


def error_type(raw: bytes) -> str:
    match = re.search(rb"x-amzn-ErrorType: (\S+)", raw)
    return match.group(1).decode() if match else ""


def head(lines: dict[str, str], *, target: str = INVOKE, method: str = "POST") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items()) + "\r\n"
    ).encode()


@pytest.fixture(scope="module")
def shop(module_procs: Processes) -> Iterator[dict[str, Proc]]:
    """A Direct endpoint over alpha and bravo, with access control on."""
    alpha, bravo = module_procs.container("alpha"), module_procs.container("bravo")
    resource = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/shop"
    allow = {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": resource}
    access = {
        "Keys": [
            {
                "AccessKeyId": ALICE[0],
                "SecretAccessKey": ALICE[1],
                "Name": "alice",
                "Policy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            **allow,
                            "Condition": {"StringEquals": {"sagemaker:TargetContainerHostname": "alpha"}},
                        },
                        # /metrics shows what describing the endpoint would (issue 27)
                        {"Effect": "Allow", "Action": "sagemaker:DescribeEndpoint", "Resource": resource},
                    ],
                },
            },
            {
                "AccessKeyId": BOB[0],
                "SecretAccessKey": BOB[1],
                "Name": "bob",
                "Policy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        allow,
                        {
                            "Effect": "Deny",
                            "Action": "sagemaker:*",
                            "Resource": "*",
                            "Condition": {"StringEquals": {"sagemaker:TargetContainerHostname": "bravo"}},
                        },
                    ],
                },
            },
        ]
    }
    path = module_procs.tmp / "access.yaml"
    path.write_text(yaml.safe_dump(access))
    doc = endpoint_doc(
        "Direct", [container_doc("alpha", alpha.url), container_doc("bravo", bravo.url)], name="shop"
    )
    gateway = module_procs.gateway(doc, "--access", str(path))
    yield {"alpha": alpha, "bravo": bravo, "gateway": gateway}


def chunked_with_trailer(
    gateway: Proc, key: tuple[str, str], *, signed_as: str, head_says: str, trailer_says: str
) -> bytes:
    body = b"{}"
    url = f"http://127.0.0.1:{gateway.port}{INVOKE}"
    headers = sign(url, *key, body=body, headers={"X-Amzn-SageMaker-Target-Container-Hostname": signed_as})
    headers["X-Amzn-SageMaker-Target-Container-Hostname"] = head_says
    headers["Transfer-Encoding"] = "chunked"
    headers["Connection"] = "close"
    trailer = f"X-Amzn-SageMaker-Target-Container-Hostname: {trailer_says}\r\n".encode()
    return raw_exchange(gateway.port, head(headers) + b"2\r\n" + body + b"\r\n0\r\n" + trailer + b"\r\n")


@pytest.mark.parametrize(
    ("key", "signed_as", "head_says", "expected"),
    [
        (
            ALICE,
            "alpha",
            "bravo",
            "InvalidSignatureException",
        ),  # the signature covered alpha; the head says bravo
        (
            ALICE,
            "bravo",
            "bravo",
            "AccessDeniedException",
        ),  # alice may not invoke bravo, whatever the trailer says
        (BOB, "bravo", "bravo", "AccessDeniedException"),  # bob's explicit Deny on bravo
    ],
)
def test_1_a_trailer_cannot_change_what_was_authorized(
    shop: dict[str, Proc], key: tuple[str, str], signed_as: str, head_says: str, expected: str
) -> None:
    before = posts(shop["bravo"])
    raw = chunked_with_trailer(
        shop["gateway"], key, signed_as=signed_as, head_says=head_says, trailer_says="alpha"
    )
    assert statuses(raw) == [403] and error_type(raw) == expected, raw[:300]
    assert posts(shop["bravo"]) == before  # bravo never saw it


def test_1_a_trailer_is_ignored_by_the_route_too(shop: dict[str, Proc]) -> None:
    """Signed and routed as alpha; a trailer naming bravo neither reroutes nor breaks the request."""
    before = posts(shop["bravo"])
    raw = chunked_with_trailer(
        shop["gateway"], ALICE, signed_as="alpha", head_says="alpha", trailer_says="bravo"
    )
    assert statuses(raw) == [200]
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["trail"] == ["alpha"]
    assert posts(shop["bravo"]) == before


def signed_post(gateway: Proc, body: bytes, sent: bytes, content_sha256: str) -> bytes:
    url = f"http://127.0.0.1:{gateway.port}{INVOKE}"
    headers = sign(
        url,
        *BOB,
        body=body,
        headers={
            "X-Amzn-SageMaker-Target-Container-Hostname": "alpha",
            "X-Amz-Content-SHA256": content_sha256,
        },
    )
    headers.update({"Content-Length": str(len(sent)), "Connection": "close"})
    return raw_exchange(gateway.port, head(headers) + sent)


def test_2_the_signature_binds_the_body(shop: dict[str, Proc]) -> None:
    body = b'{"amount": 1}'
    digest = hashlib.sha256(body).hexdigest()
    ok = signed_post(shop["gateway"], body, body, digest)
    assert statuses(ok) == [200]
    before = posts(shop["alpha"])
    swapped = signed_post(
        shop["gateway"], body, b'{"amount": 9}', digest
    )  # signed over the header, body swapped
    assert statuses(swapped) == [403] and error_type(swapped) == "InvalidSignatureException"
    assert b"does not match the SHA-256 of the request body" in swapped
    unsigned = signed_post(shop["gateway"], body, b'{"amount": 9}', "UNSIGNED-PAYLOAD")
    assert statuses(unsigned) == [403] and error_type(unsigned) == "InvalidSignatureException"
    assert b"UNSIGNED-PAYLOAD is not accepted" in unsigned
    assert posts(shop["alpha"]) == before  # the attacker's body reached no container


def test_9_metrics_need_a_signature_under_access(shop: dict[str, Proc]) -> None:
    gateway = shop["gateway"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gateway.url + "/metrics", timeout=10)
    with caught.value:
        assert caught.value.code == 403
        assert caught.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    url = gateway.url + "/metrics"
    request = urllib.request.Request(url, headers=sign(url, *ALICE, body=b"", headers={}, method="GET"))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert b'sagemaker_invocations_total{container="alpha"' in response.read()


# --- limits and timeouts: a gateway without access control, with short timeouts --------------------------

TIMEOUT = 2  # seconds, for every client timeout of the `tight` gateway


@pytest.fixture(scope="module")
def tight(module_procs: Processes) -> Iterator[dict[str, Proc]]:
    alpha = module_procs.container("alpha")
    doc = endpoint_doc(
        "Direct", [container_doc("alpha", alpha.url, InvocationTimeoutInSeconds=5)], name="shop"
    )
    path = module_procs.write_endpoint(doc, "tight.yaml")
    gateway = start_process(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            str(path),
            "--port",
            "0",
            "--header-timeout",
            str(TIMEOUT),
            "--body-timeout",
            str(TIMEOUT),
            "--keep-alive-timeout",
            str(TIMEOUT),
            "--send-timeout",
            "30",  # no test here is about it (bench/hardening.py is): test_6's client stalls on purpose
            "--max-connections",
            "40",
            "--max-buffered-mib",
            "13",
        ],
        stderr=module_procs.tmp / "tight.log",
    )
    module_procs.started.append(gateway)
    yield {"alpha": alpha, "gateway": gateway}


def invoke_bytes(body: bytes = b"{}", *, close: bool = False, extra: str = "") -> bytes:
    return (
        f"POST {INVOKE} HTTP/1.1\r\nHost: localhost\r\nX-Amzn-SageMaker-Target-Container-Hostname: alpha\r\n"
        "Content-Length: "
        f"{len(body)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}{extra}\r\n"
    ).encode() + body


def until_closed(sock: socket.socket) -> bytes:
    """Read until the gateway closes the connection; the socket's own timeout bounds the wait."""
    chunks = []
    while piece := sock.recv(65536):
        chunks.append(piece)
    return b"".join(chunks)


def test_3_idle_and_slow_clients_are_closed(tight: dict[str, Proc]) -> None:
    port = tight["gateway"].port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 5) as silent,
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 5) as kept,
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 5) as slow_head,
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 5) as slow_body,
    ):
        kept.sendall(invoke_bytes())
        slow_head.sendall(b"POST /endpoints/shop/invocations HTTP/1.1\r\nHost: localhost\r\n")
        slow_body.sendall(invoke_bytes(b"{}")[:-1])  # one byte of the body short
        assert until_closed(silent) == b""  # never sent a byte: closed without an answer
        answered = until_closed(kept)
        assert statuses(answered) == [200]  # answered, then closed once idle past the keep-alive timeout
        for sock in (slow_head, slow_body):
            raw = until_closed(sock)
            assert statuses(raw) == [408] and error_type(raw) == "RequestTimeout"


def test_3_a_slowloris_is_cut_off(tight: dict[str, Proc]) -> None:
    """One byte at a time, each well within any per-read timeout: the header deadline still ends it."""
    with socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=TIMEOUT * 5) as sock:
        request = invoke_bytes()
        sent = 0
        try:
            for sent in range(len(request)):
                sock.sendall(request[sent : sent + 1])
                time.sleep(0.25)  # the fault itself: a client this slow, not synchronisation
                if sent * 0.25 > TIMEOUT * 10:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = until_closed(sock)
    assert statuses(raw) == [408], f"sent {sent} of {len(request)} bytes and was not cut off"


def test_3_connections_past_the_cap_are_refused_and_logged(
    tight: dict[str, Proc], module_procs: Processes
) -> None:
    socks = []
    try:
        for _ in range(40):
            socks.append(socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=10))
        # the 40 are accepted in order; one more exchange tells the gateway has counted them all
        raw = raw_exchange(tight["gateway"].port, invoke_bytes(close=True))
        assert statuses(raw) == [503] and error_type(raw) == "ServiceUnavailable"
        assert b"maximum of 40 client connections" in raw
    finally:
        for sock in socks:
            sock.close()
    log = (module_procs.tmp / "tight.log").read_text()
    assert "client connections open, the maximum (--max-connections)" in log


def test_3_the_descriptor_limit_caps_connections(procs: Processes) -> None:
    """Under a small `ulimit -n` the gateway says so at start, and turns clients away before it runs out."""
    import subprocess

    alpha = procs.container("alpha")
    path = procs.write_endpoint(endpoint_doc("Direct", [container_doc("alpha", alpha.url)], name="shop"))
    log = procs.tmp / "gateway.log"

    with open(log, "w") as err:
        popen = subprocess.Popen(
            [
                "sh",
                "-c",
                'ulimit -n 300 && exec "$0" -m gateway serve "$1" --port 0',
                sys.executable,
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert popen.stdout is not None
        port = int(re.search(r"listening on http://[\d.]+:(\d+)", popen.stdout.readline()).group(1))  # type: ignore[union-attr]
        assert "holds 22 client connections, not 4096: capping there" in log.read_text()
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(22)]
        try:
            raw = raw_exchange(port, invoke_bytes(close=True))
            assert statuses(raw) == [503]
        finally:
            for sock in socks:
                sock.close()
        assert statuses(raw_exchange(port, invoke_bytes(close=True))) == [
            200
        ]  # and serves again once they left
    finally:
        popen.kill()
        popen.wait()
        assert popen.stdout is not None
        popen.stdout.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (invoke_bytes(extra="X-Big: " + "a" * 100_000 + "\r\n"), 431, "RequestHeaderFieldsTooLarge"),
        (
            invoke_bytes(extra="".join(f"X-{i}: v\r\n" for i in range(200))),
            431,
            "RequestHeaderFieldsTooLarge",
        ),
        (b"POST /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "URITooLong"),
        (
            b"POST /" + b"a" * 8_000_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
            414,
            "URITooLong",
        ),  # in one read or many
    ],
    ids=["100KB-header", "200-headers", "9KB-url", "8MB-url"],
)
def test_4_heads_past_the_limits_are_refused(
    tight: dict[str, Proc], request_bytes: bytes, status: int, code: str
) -> None:
    raw = raw_exchange(tight["gateway"].port, request_bytes)
    assert statuses(raw) == [status] and error_type(raw) == code


def test_4_a_64_mib_header_is_refused_and_stalls_nobody(tight: dict[str, Proc]) -> None:
    """The gateway answers 431 once the head passes 32 KiB; what else the sender pushes is drained unparsed
    (before the fix the parser buffered it in quadratic time, stalling every client for seconds)."""
    with socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=TIMEOUT * 5) as sock:
        sock.sendall(b"POST /endpoints/shop/invocations HTTP/1.1\r\nHost: localhost\r\nX-Big: ")

        def push() -> None:
            piece = b"a" * 65536
            try:
                for _ in range(1024):  # 64 MiB
                    sock.sendall(piece)
            except OSError:
                pass  # the gateway closed after its lingering drain

        pusher = threading.Thread(target=push)
        pusher.start()
        try:
            assert statuses(raw_exchange(tight["gateway"].port, invoke_bytes(close=True))) == [
                200
            ]  # meanwhile
            answer = b""
            while b"\r\n\r\n" not in answer:
                piece = sock.recv(65536)
                assert piece, "closed without an answer"
                answer += piece
        finally:
            pusher.join(timeout=60)
    assert statuses(answer) == [431] and error_type(answer) == "RequestHeaderFieldsTooLarge"


def test_6_a_client_that_reads_nothing_stops_being_read(tight: dict[str, Proc]) -> None:
    """Pipelined requests with 60 KiB answers, never read: the gateway stops reading requests once its
    output backs up, instead of running them all and holding every answer (112 MB before the fix)."""
    alpha = tight["alpha"]
    before = posts(alpha)
    body = json.dumps({"faults": {"alpha": {"size": 60_000}}}).encode()
    count = 1000
    with socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(invoke_bytes(body) * count)
        ran = _settled(lambda: posts(alpha) - before)
        assert ran < count // 2, f"{ran} of {count} ran while the client read nothing"
        sock.settimeout(TIMEOUT * 5)
        answers, tail = 0, b""
        marker = b"HTTP/1.1 200 OK"
        while answers < count:  # then every answer arrives, none lost
            piece = sock.recv(1 << 20)
            assert piece, f"closed after {answers} answers"
            window = tail + piece
            answers += window.count(marker)
            tail = window[-(len(marker) - 1) :]
    assert posts(alpha) - before == count


def _settled(read: Any, *, window: float = 1.0, limit: float = 30.0) -> int:
    """The value of `read()` once it stops changing for `window` seconds (what a stalled peer looks like)."""
    deadline = time.monotonic() + limit
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = read()
        if current != value:
            value, since = current, time.monotonic()
        elif time.monotonic() - since >= window:
            return int(value)
    return int(value)


def test_7_bodies_past_the_process_cap_get_503(tight: dict[str, Proc]) -> None:
    """--max-buffered-mib 13: two 6 MiB bodies fit, a third waits for room and is told to retry (503)."""
    alpha = tight["alpha"]
    big = json.dumps({"faults": {"alpha": {"delay": 3}}, "pad": "x" * (6 * 1024 * 1024 - 100)}).encode()
    assert len(big) <= 6 * 1024 * 1024
    before = posts(alpha)
    first = socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=30)
    second = socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=30)
    try:
        first.sendall(invoke_bytes(big, close=True))
        second.sendall(invoke_bytes(big, close=True))
        _settled(lambda: posts(alpha) - before, window=0.5)
        third = raw_exchange(tight["gateway"].port, invoke_bytes(big, close=True))
        assert statuses(third) == [503] and error_type(third) == "ServiceUnavailable"
        assert statuses(until_closed(first)) == [200] and statuses(until_closed(second)) == [200]
    finally:
        first.close()
        second.close()
    assert statuses(raw_exchange(tight["gateway"].port, invoke_bytes(b"{}", close=True))) == [
        200
    ]  # room again


def test_7_one_connection_reads_one_request_ahead(tight: dict[str, Proc]) -> None:
    """Three pipelined 6 MiB bodies on one connection to a slow container: the gateway holds the one being
    answered and one more (12 MiB of the 13 allowed), so a second client's body finds no room; with all
    three read at once (before the fix, up to 16) it would be the pipeline that was refused."""
    alpha = tight["alpha"]
    big = json.dumps({"faults": {"alpha": {"delay": 2}}, "pad": "x" * (6 * 1024 * 1024 - 100)}).encode()
    before = posts(alpha)
    with socket.create_connection(("127.0.0.1", tight["gateway"].port), timeout=60) as sock:
        sender = threading.Thread(
            target=sock.sendall, args=(invoke_bytes(big) * 2 + invoke_bytes(big, close=True),)
        )
        sender.start()
        _settled(lambda: posts(alpha) - before, window=0.5)
        other = raw_exchange(tight["gateway"].port, invoke_bytes(big, close=True))
        assert statuses(other) == [503]
        assert statuses(until_closed(sock)) == [200, 200, 200]
        sender.join(timeout=30)
    assert posts(alpha) - before == 3


def test_10_an_upgrade_request_gets_one_answer_and_is_not_run(tight: dict[str, Proc]) -> None:
    before = posts(tight["alpha"])
    raw = raw_exchange(
        tight["gateway"].port, invoke_bytes(b"{}", extra="Upgrade: h2c\r\nConnection: Upgrade\r\n")
    )
    assert statuses(raw) == [400] and b"Protocol upgrades are not supported" in raw
    assert posts(tight["alpha"]) == before


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (invoke_bytes(close=True).replace(b"Host: localhost\r\n", b""), 400, b"must have a Host header"),
        (
            invoke_bytes(close=True).replace(
                b"Host: localhost\r\n", b"Host: localhost\r\nHost: 127.0.0.1\r\n"
            ),
            400,
            b"Header host must appear once",
        ),
        (
            invoke_bytes(close=True, extra="X-Amzn-SageMaker-Target-Container-Hostname: bravo\r\n"),
            400,
            b"x-amzn-sagemaker-target-container-hostname must appear once",
        ),
        (
            invoke_bytes(close=True).replace(INVOKE.encode(), b"http://127.0.0.1" + INVOKE.encode(), 1),
            200,
            b'"alpha"',
        ),
        (
            invoke_bytes(close=True).replace(b"hostname: alpha\r\n", b"hostname: alpha  \t\r\n"),
            200,
            b'"alpha"',
        ),
    ],
    ids=["no-host", "two-hosts", "two-targets", "absolute-form", "trailing-space"],
)
def test_11_heads_as_http_1_1_has_them(
    tight: dict[str, Proc], request_bytes: bytes, status: int, message: bytes
) -> None:
    raw = raw_exchange(tight["gateway"].port, request_bytes)
    assert statuses(raw) == [status] and message in raw, raw[:400]


def test_8_closed_connections_are_freed_without_the_cycle_collector(procs: Processes) -> None:
    """Client and container connections, once closed, are freed by reference counting alone: before the fix
    each held its parser and the parser it, so 35 dead connections held 290 MB until a collection ran.

    Counted among the objects the collector tracks, not by weak references: the request path compiled by
    mypyc (D54) does not clear a weak reference to a protocol when it is freed. This runs the tree as
    written; compiled, a connection opened while a request waited in a task is freed at the next
    collection instead, as mypyc's finished coroutines hold their locals in a cycle (D54)."""
    import asyncio
    import gc

    import uvloop

    from gateway.app import Gateway, Options
    from gateway.backends.http import HttpBackend
    from gateway.endpoint import load_endpoint
    from gateway.server import HttpProtocol
    from gateway.upstream import Connection

    alpha = procs.container("alpha")
    endpoint = load_endpoint(
        procs.write_endpoint(endpoint_doc("Direct", [container_doc("alpha", alpha.url)], name="shop"))
    )

    kinds = (HttpProtocol, Connection)

    def connections() -> int:
        # by exact type: isinstance would read __class__ off every object, and some of torch's warn on it
        return sum(type(item) in kinds for item in gc.get_objects())

    async def exercise() -> int:
        gateway = Gateway(Options(port=0))
        service = await gateway.add(endpoint, base=procs.tmp)
        gateway.mount("shop", [(service, 1.0)])
        _, port = await gateway.listen()
        server = gateway.server
        assert server is not None
        backend = service.dataplane.backends[0]
        assert isinstance(backend, HttpBackend)
        seen = 0
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(invoke_bytes())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            seen += len(server.connections)
            writer.close()
            await writer.wait_closed()
        seen += len(backend.server.pool._all)
        alpha.kill()  # and the container goes away: the pooled connection to it closes
        async with asyncio.timeout(10):
            while server.connections or backend.server.pool._all:
                await asyncio.sleep(0.01)  # both closes are the peers'; nothing to await but their arrival
        await gateway.close()
        return seen

    gc.collect()
    before = connections()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            seen = runner.run(exercise())
        alive = connections() - before
    finally:
        gc.enable()
    assert seen == 6 and alive == 0, f"{alive} of {seen} closed connections still alive"


def test_9_mce_status_signs_its_scrape_when_the_gateway_asks(shop: dict[str, Proc]) -> None:
    import os
    import subprocess

    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def status(**env: str) -> subprocess.CompletedProcess[str]:
        run = [sys.executable, "-m", "gateway", "status", shop["gateway"].url]
        environment = {**clean, **env}
        return subprocess.run(run, check=False, capture_output=True, text=True, timeout=60, env=environment)

    refused = status(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    assert refused.returncode == 2 and "runs with --access: set AWS_ACCESS_KEY_ID" in refused.stderr
    signed = status(AWS_ACCESS_KEY_ID=ALICE[0], AWS_SECRET_ACCESS_KEY=ALICE[1])
    assert signed.returncode == 0, signed.stderr
    assert "alpha" in signed.stdout and "bravo" in signed.stdout
