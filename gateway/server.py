"""Where a request enters: the HTTP/1.1 front door, an `asyncio.Protocol` fed by the httptools parser.

Per connection, requests are answered in order; one complete request may wait behind the one being
answered (`Limits.read_ahead`), then reading pauses, as it does while the client is not taking its
answers. The request line and headers are checked as soon as they are parsed, so a request that cannot
succeed (unknown route, bad header, a body over 6 MiB by its Content-Length) is refused without reading
its body. What routes a request is frozen when its head is complete: trailers are read and dropped, so
the access check after the body judges exactly the headers the route was chosen from. A request body is
buffered whole (capped at 6 MiB by the API, and across all connections by `Limits.max_buffered_bodies`).

The connection parses, queues and writes; each complete request becomes a `Cycle` (gateway.cycle), the
one driver that runs it and writes its answer through this connection.

Every client has deadlines (gateway.limits): to send its head, its body, its next request on a kept-alive
connection, and to take its answer; one sweep a second enforces them all. Every failure leaves as a
SageMaker error (`gateway.wire.error_response`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from gateway import wire
from gateway.async_inference import MAX_INLINE_BODY, AsyncConfig, AsyncQueue, Journal, accepted, job_from
from gateway.cycle import Cycle
from gateway.errors import GatewayError, RequestRefused, ServiceUnavailable, UnknownOperation, ValidationError
from gateway.invocation import Invocation, check_component, invocation_from
from gateway.limits import BodyBudget, Limits
from gateway.metrics import Metrics
from gateway.origins import Origins
from gateway.routing import Operation, Route, Router, unknown_endpoint
from gateway.service import Service, Variants
from gateway.timeline import Timeline

if TYPE_CHECKING:
    from gateway.access import Access, Key


class Control(Protocol):
    """The control plane, as the front door sees it (gateway.control): `POST /` is its."""

    async def call(
        self, target: bytes | None, body: bytes, authorize: Callable[[str, str], None] | None
    ) -> bytes:
        """The AWS JSON 1.1 answer to one request with this X-Amz-Target, or a GatewayError (a ControlError,
        framed by the front door); `authorize(action, resource ARN)` raises unless the caller may (None:
        access is off)."""

    def absent(self, name: str) -> GatewayError | None:
        """Why endpoint `name`, not mounted, cannot be invoked (Creating, Failed), if it exists."""


logger = logging.getLogger(__name__)

LINGER = 5.0  # after refusing a request mid-body, keep draining the client this long before closing
TURNED_AWAY_LOG_EVERY = 10.0  # seconds between log lines about connections refused at the cap

# Where the parser is in the request it reads, for the client's deadlines.
_WAIT = 0  # between requests: no byte of the next one yet
_HEAD = 1  # request line and headers
_BODY = 2
# Why reading is paused (a bit each).
# A read this small that begins a request is parsed in one call, not split at message boundaries.
_WHOLE_READ = 16 * 1024
# What a request line holds besides its target: the method, spaces, "HTTP/1.1".
_LINE_EXTRA = 32
_QUEUE_FULL = 1  # a request is already waiting behind the one being answered
_OUTPUT_FULL = 2  # the client is not taking its answers

# Headers the gateway reads: a request that repeats one is refused, so nobody can say two things at once.
_SINGLE = frozenset(
    {
        b"host",
        b"content-length",
        b"content-type",
        b"accept",
        b"authorization",
        b"x-amz-date",
        b"x-amz-content-sha256",
        b"x-amz-security-token",
        b"traceparent",
        wire.CUSTOM_ATTRIBUTES,
        wire.TARGET_MODEL,
        wire.TARGET_VARIANT,
        wire.TARGET_CONTAINER,
        wire.INFERENCE_ID,
    }
)


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing; the connection answers `error` and closes."""

    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _timed_out(what: str, seconds: float) -> RequestRefused:
    return RequestRefused(408, "RequestTimeout", f"The request's {what} did not arrive within {seconds:g} s.")


def _no_room() -> ServiceUnavailable:
    """Limits.max_buffered_bodies is reached: 503, which clients retry."""
    return ServiceUnavailable("The gateway holds as many request bodies as it may; retry later.")


INVOCATIONS = (Operation.INVOKE, Operation.STREAM)  # a route and a container's answer
BODIED = (*INVOCATIONS, Operation.ASYNC)  # a body, counted against the budget
ACTIONS = {  # the IAM action --access authorizes for each (gateway.access)
    Operation.INVOKE: "sagemaker:InvokeEndpoint",
    Operation.STREAM: "sagemaker:InvokeEndpoint",  # InvokeEndpointWithResponseStream's, as documented
    Operation.ASYNC: "sagemaker:InvokeEndpointAsync",
}
DESCRIBE = "sagemaker:DescribeEndpoint"  # what a key needs to see an endpoint's metrics


CONTROL_TYPE = b"application/x-amz-json-1.1"  # what every AWS SDK sends to a JSON 1.1 service


def check_control_type(content_type: bytes | None) -> None:
    """A control-plane request is AWS JSON 1.1, refused before its body is read otherwise: a cross-site
    form or `fetch` can send text/plain without asking first, but not this type (gateway.origins)."""
    if content_type is None or content_type.partition(b";")[0].strip().lower() != CONTROL_TYPE:
        shown = "none" if content_type is None else wire.shown(content_type)
        raise RequestRefused(
            415,
            "UnsupportedMediaTypeException",
            f"A control-plane request has Content-Type {CONTROL_TYPE.decode()}, as AWS SDKs send it; "
            f"this one has {shown}.",
        )


def body_too_large(size: int | None) -> ValidationError:
    measured = f"{size} bytes" if size is not None else f"over {wire.MAX_BODY} bytes"
    return ValidationError(
        f"Request body is {measured}; the API accepts at most {wire.MAX_BODY} bytes (6 MB) per request."
    )


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __deletable__ = ("_parser",)  # dropped when the connection closes (and so for mypyc, D24)

    def __init__(self, server: Server) -> None:
        self._server = server
        self._service: Service | None = None  # the endpoint the request being parsed names
        self._access = server.access
        self._origins = server.origins
        self._limits = server.limits
        self._bodies = server.bodies
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # the request being parsed
        self._phase = _WAIT
        self._deadline = math.inf  # for the parser's phase (header, body, keep-alive timeouts)
        self._send_deadline = math.inf  # while the client takes none of its answer
        self._head_bytes = 0  # bytes of the head being read, counted before the parser sees them
        self._line_left = (
            self._limits.max_url + _LINE_EXTRA
        )  # bytes the request line may still take; -1: ended
        self._body_left = -1  # bytes of body still to come, when its length is known
        self._stash = b""  # read but not parsed: the connection stopped at a request's end
        self._header_count = 0
        self._repeated: list[bytes] | None = None
        self._head_done = False  # headers after this are trailers: read, never used
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._held = 0
        self._buffering = True
        self._shed = False  # refused for want of room: not authenticated, body not kept
        self._upgrade = False
        self._operation: Operation | None = None
        self._route: Route | None = None
        self._call: Invocation | None = None
        self._target: bytes | None = None  # X-Amz-Target of a control-plane request
        self._rejected: GatewayError | None = None
        self._ignoring = False  # after a refusal that ends the connection, later bytes are not parsed
        self._paused_for = 0  # _QUEUE_FULL | _OUTPUT_FULL
        # the requests being answered, one at a time, each by its cycle
        self._queue: collections.deque[Cycle] = collections.deque()
        self._current: Cycle | None = None
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None

    # connection lifecycle
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self._server
        if len(server.connections) >= self._limits.max_connections:
            server.turned_away()
            self._ignoring = True
            self.write(
                wire.error_response(
                    ServiceUnavailable(
                        f"The gateway holds its maximum of {self._limits.max_connections} client "
                        "connections; "
                        "retry later."
                    ),
                    server.request_ids.next(),
                    close=True,
                )
            )
            self._close()
            return
        server.connections.add(self)
        self._deadline = server.clock + self._limits.header_timeout  # a new connection owes its first request

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.forget(self)
        held = self._held + sum(cycle.held for cycle in self._queue)
        current = self._current
        if current is not None:
            current.abandon()  # nobody is left to answer; stop waiting on the containers
            held += current.held
            current.held = 0
            self._current = None
        self._bodies.release(held)
        self._held = 0
        self._queue.clear()
        self._body = []
        self._wake_drain()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        # the parser holds this protocol's callbacks: drop it, so a closed connection is freed at once,
        # not by the cycle collector
        del self._parser

    def data_received(self, data: bytes) -> None:
        if self._ignoring:
            return
        if self._stash:
            data, self._stash = self._stash + data, b""
        if self._phase == _WAIT and len(data) <= _WHOLE_READ and not self._paused_for:
            # The common case: a read that begins a request and is small. Fed in one call; a head it
            # leaves unfinished is counted from here on. What it may hold beyond one request is the
            # connection's read-ahead (at most _WHOLE_READ bytes of requests).
            if self._feed(data) and self._phase == _HEAD:
                self._head_bytes = len(data)
                if b"\r\n" in data:  # its request line ended (or the on_url check measures it)
                    self._line_left = -1
                else:
                    self._line_left -= len(data)
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed the parser one message boundary at a time (reads past `_WHOLE_READ`, or that continue a
        request): the end of a head, the end of a body of known length. So a connection that must stop
        reading (its queue or its output is full) stops exactly at a request's end, keeping the rest
        unparsed (`_stash`); and a head is measured before the parser buffers it, so one over `max_head`
        is refused in linear time, whatever its size."""
        while data:
            if self._paused_for:
                self._stash = data
                return
            if self._phase == _BODY:
                left = self._body_left
                piece = data if left < 0 or left >= len(data) else data[:left]
                if left >= 0:
                    self._body_left = left - len(piece)
            else:
                end = data.find(b"\r\n\r\n")
                piece = data if end < 0 else data[: end + 4]
                if (
                    self._line_left >= 0
                ):  # still in the request line: a line too long is 414 however it arrives
                    line_end = piece.find(b"\r\n")
                    self._line_left = -1 if 0 <= line_end <= self._line_left else self._line_left - len(piece)
                    if self._line_left < -1 or (line_end < 0 and self._line_left < 0):
                        self._refuse(self._url_too_long())
                        return
                self._head_bytes += len(piece)
                if self._head_bytes > self._limits.max_head:
                    self._refuse(self._head_too_large())
                    return
            data = data[len(piece) :] if len(piece) < len(data) else b""
            if not self._feed(piece):
                return

    def _unstash(self) -> None:
        if self._stash and not self._paused_for and not self._ignoring:
            data, self._stash = self._stash, b""
            self._parse(data)

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; False once the connection refused the request and reads no more."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # on_headers_complete refused it (and the body, if any, was not parsed): just stop reading
            self._ignoring = True
            if self._transport is not None:
                self._transport.pause_reading()
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Refusal):
                raise
            self._refuse(exc.__context__.error)
        except httptools.HttpParserError as exc:
            self._refuse(ValidationError(f"Malformed HTTP request: {exc}."))
        return not self._ignoring

    def _url_too_long(self) -> RequestRefused:
        return RequestRefused(414, "URITooLong", f"The request target passes {self._limits.max_url} bytes.")

    def _head_too_large(self) -> RequestRefused:
        return RequestRefused(
            431,
            "RequestHeaderFieldsTooLarge",
            f"The request line and headers pass {self._limits.max_head} bytes "
            f"(or {self._limits.max_headers} header fields).",
        )

    def pause_writing(self) -> None:
        self._write_paused = True
        self._send_deadline = self._loop.time() + self._limits.send_timeout
        self._pause(_OUTPUT_FULL)  # read, and answer, no more requests while the answers are not taken

    def resume_writing(self) -> None:
        self._write_paused = False
        self._send_deadline = math.inf
        self._wake_drain()
        self._resume(_OUTPUT_FULL)
        if self._current is None and self._queue and self._transport is not None:
            self._start_next()

    def _pause(self, reason: int) -> None:
        if not self._paused_for and self._transport is not None and not self._ignoring:
            self._transport.pause_reading()
        self._paused_for |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused_for & reason:
            return
        self._paused_for &= ~reason
        if not self._paused_for and self._transport is not None and not self._ignoring:
            self._transport.resume_reading()
            self._arm()
            if self._stash:
                self._loop.call_soon(self._unstash)

    def _arm(self) -> None:
        """The deadline of what the client owes now (none while it waits for an answer)."""
        limits, clock = self._limits, self._server.clock
        if self._phase == _HEAD:
            self._deadline = clock + limits.header_timeout
        elif self._phase == _BODY:
            self._deadline = clock + limits.body_timeout
        elif self._current is not None or self._queue:
            self._deadline = math.inf
        else:
            self._deadline = clock + limits.keep_alive_timeout

    def check(self, now: float) -> None:
        """The server's sweep: act on a deadline that has passed."""
        if self._send_deadline <= now:
            logger.info("client took none of its answer for %g s; connection cut", self._limits.send_timeout)
            self.abort()
        elif self._deadline <= now and not self._paused_for and not self._ignoring:
            self._deadline = math.inf
            if self._phase == _WAIT:
                if self._transport is not None:
                    self._transport.close()  # idle: nothing owed, nothing to answer
            elif self._phase == _HEAD:
                self._refuse(_timed_out("headers", self._limits.header_timeout))
            else:
                self._refuse(_timed_out("body", self._limits.body_timeout))

    def shutdown(self) -> None:
        """Finish the answer in progress, if any, then close."""
        self._closing = True
        if self._current is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    cut = abort  # gateway.cycle.Connection: an answer begun cannot be finished

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._deadline = self._server.clock + self._limits.header_timeout
        self._header_count = 0
        self._repeated = None
        self._head_done = self._upgrade = self._shed = False
        self._buffering = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._service = None
        self._operation = None
        self._route = None
        self._call = None
        self._target = None
        self._rejected = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url:
            raise _Refusal(self._url_too_long())

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer: what routed and authorized the request is already fixed
        self._header_count += 1
        if self._header_count > self._limits.max_headers:  # its bytes are counted as they are read
            raise _Refusal(self._head_too_large())
        name = name.lower()
        headers = self._headers
        if name in headers:
            if self._repeated is None:
                self._repeated = []
            self._repeated.append(name)
        headers[name] = value.rstrip(b" \t")  # RFC 9110 §5.5: a field value has no trailing whitespace

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._head_bytes = 0
        self._line_left = self._limits.max_url + _LINE_EXTRA
        self._phase = _BODY
        self._deadline = self._server.clock + self._limits.body_timeout
        headers = self._headers
        parser = self._parser
        field = headers.get(wire.CONTENT_LENGTH)
        length = int(field) if field is not None else None  # llhttp has checked it is digits
        self._body_left = length if length is not None and b"transfer-encoding" not in headers else -1
        try:
            self._check_head(parser, headers)
            path = self._url.partition(b"?")[0]
            foreign = self._origins.refusal(headers.get(b"host"), headers.get(b"origin"))
            if foreign is not None:  # before anything else: nothing done for a page that is no client
                if path == b"/" and parser.get_method() == b"POST" and self._server.control is not None:
                    self._operation = Operation.CONTROL  # refused in the control plane's shape
                self._refuse(foreign)
                return
            if self._server.control is not None and path in (b"/", b"/metrics"):
                self._operation = self._server.local_operation(parser.get_method(), path)
                self._target = headers.get(b"x-amz-target")
                if self._operation is Operation.CONTROL:
                    check_control_type(headers.get(b"content-type"))
                if length is not None and length > wire.MAX_BODY:
                    self._refuse(body_too_large(length))
                    return
            else:
                component = headers.get(wire.INFERENCE_COMPONENT)
                if component is not None:
                    check_component(component)
                service = self._service = self._server.service_for(
                    path, headers.get(wire.TARGET_VARIANT), component
                )
                router = service.dataplane.router
                self._operation = router.operation(parser.get_method(), path)
            if self._operation is Operation.ASYNC:
                self._check_async(router, length)
            if self._operation in BODIED:
                if length is not None and length > wire.MAX_BODY:
                    self._refuse(body_too_large(length))  # refused before the body is read
                    return
                if length is not None and not self._bodies.take(length):
                    self._shed_request()
                    return
                self._held = length if length is not None else 0
            if self._operation in INVOCATIONS:
                self._call = invocation_from(headers, stream=self._operation is Operation.STREAM)
                self._route = router.route(headers.get(wire.TARGET_CONTAINER), self._call.target_model)
        except GatewayError as error:
            self._rejected = error
            # a rejected body is still read for the signature check, which comes first (gateway.access)
            self._buffering = self._access is not None
            if not self._buffering:
                self._bodies.release(self._held)
                self._held = 0
            return
        if headers.get(wire.EXPECT, b"").lower() == b"100-continue" and self._current is None:
            self.write(wire.CONTINUE)

    def _authorized(self) -> tuple[str, str | None]:
        """The endpoint and the IAM action --access authorizes this request for (None: a signature by any
        key will do). A path naming an endpoint that does not serve (Creating, Failed, or no such
        endpoint) is authorized as its invocation all the same, before it is refused: a key learns
        nothing of an endpoint it may not invoke (gateway.access)."""
        if self._service is not None:
            endpoint = self._service.dataplane.router.endpoint_name
            if self._operation is Operation.METRICS:  # one endpoint's metrics: what describing it shows
                return endpoint, DESCRIBE
        else:
            path = self._url.partition(b"?")[0]
            named = wire.endpoint_name(path)
            if named is None:
                return "", None
            endpoint = named.decode("latin-1")
            if self._operation is None:
                asynchronous = path.endswith(b"/async-invocations")
                return endpoint, ACTIONS[Operation.ASYNC if asynchronous else Operation.INVOKE]
        return endpoint, ACTIONS.get(self._operation) if self._operation is not None else None

    def _check_async(self, router: Router, length: int | None) -> None:
        """InvokeEndpointAsync needs an endpoint configured for it, reached with no hostname or model,
        and an inline Body of at most 128,000 bytes."""
        if self._server.queue(router.endpoint_name) is None:
            raise ValidationError(
                f"Endpoint {router.endpoint_name} is not configured for asynchronous inference: its endpoint "
                "configuration has no AsyncInferenceConfig."
            )
        router.route(None, None)  # a Direct or multi-model endpoint has no route without a header
        if length is not None and length > MAX_INLINE_BODY:
            raise ValidationError(
                f"An inline Body is at most {MAX_INLINE_BODY} bytes; larger input goes in InputLocation."
            )

    def _check_head(self, parser: httptools.HttpRequestParser, headers: dict[bytes, bytes]) -> None:
        """HTTP/1.1's rules for the head (RFC 9112 §3.2) and the gateway's own: one value per header it
        reads."""
        if parser.should_upgrade():
            self._upgrade = True  # llhttp hands the rest of the connection over: it ends with this answer
            raise ValidationError("Protocol upgrades are not supported: send the request without Upgrade.")
        url = self._url
        if not url.startswith(b"/") and url.startswith((b"http://", b"https://")):
            # absolute form (RFC 9112 §3.2.2): the target's authority stands in for Host
            authority, _, path = url.partition(b"://")[2].partition(b"/")
            self._url = b"/" + path
            headers[b"host"] = authority
        if self._repeated is not None:
            for name in self._repeated:
                if name in _SINGLE:
                    raise ValidationError(
                        f"Header {name.decode('latin-1')} must appear once; it appears more."
                    )
        if b"host" not in headers and parser.get_http_version() != "1.0":
            raise ValidationError("An HTTP/1.1 request must have a Host header.")

    def _shed_request(self) -> None:
        """No room for this body (Limits.max_buffered_bodies): answer 503, which clients retry, and drop the
        body."""
        self._shed = True
        self._buffering = False
        self._rejected = _no_room()

    def on_body(self, body: bytes) -> None:
        if self._ignoring or not self._buffering:
            return
        size = self._body_size = self._body_size + len(body)
        if size > self._held:  # no Content-Length: count the body as it comes
            if size > wire.MAX_BODY:
                self._refuse(body_too_large(None))
                return
            if not self._bodies.take(size - self._held):
                self._refuse(_no_room())
                return
            self._held = size
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._ignoring:
            return
        self._phase = _WAIT
        self._deadline = math.inf  # the client waits for its answer now
        keep_alive = not self._closing and not self._upgrade and self._parser.should_keep_alive()
        call = self._call
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        if call is not None and self._rejected is None:
            call.body = body
        key: Key | None = None
        if self._access is not None and not self._shed and self._operation is not Operation.PING:
            # who is asking comes before what is wrong with the request: no container names to strangers
            try:
                endpoint, action = self._authorized()
                key = self._access.check(
                    self._parser.get_method(), self._url, self._headers, body, endpoint, action=action
                )
            except GatewayError as error:
                self._rejected = error
        answer = self._server.answer_for(self._operation, self._target, body, key)
        if self._operation is Operation.ASYNC and self._rejected is None and self._service is not None:
            try:
                answer = self._server.submit(
                    self._service.dataplane.router.endpoint_name, self._headers, body
                )
            except GatewayError as error:
                self._rejected = error
        rid = self._server.request_ids.next()
        if call is not None and call.traceparent is None:
            trace = rid.replace(b"-", b"")  # a fresh trace, named after the request: 32 hex digits
            call.traceparent = b"00-" + trace + b"-" + trace[16:] + b"-01"
        operation = self._operation
        service = self._service
        timeline = (
            Timeline()
            if operation in INVOCATIONS and service is not None and service.telemetry.enabled
            else None
        )
        cycle = Cycle(
            self,
            service,
            rid,
            operation,
            self._route,
            call,
            self._rejected,
            keep_alive=keep_alive,
            held=self._held,
            timeline=timeline,
            answer=answer,
        )
        self._held = 0
        self._enqueue(cycle)

    # answering: one cycle at a time
    def _enqueue(self, cycle: Cycle) -> None:
        if self._current is None:
            self._current = cycle
            cycle.start()
        else:
            self._queue.append(cycle)
            if len(self._queue) >= self._limits.read_ahead:
                self._pause(_QUEUE_FULL)

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` and close the connection, reading nothing more."""
        if self._transport is not None and not self._paused_for:
            self._transport.pause_reading()
        self._ignoring = True
        self._deadline = math.inf
        self._bodies.release(self._held)
        self._held = 0
        self._body = []
        self._enqueue(
            Cycle(
                self,
                self._service,
                self._server.request_ids.next(),
                self._operation,  # a control-plane request is refused in the control plane's shape
                None,
                None,
                error,
                keep_alive=False,
            )
        )

    def answering(self, services: Collection[Service]) -> bool:
        if self._phase == _BODY and self._service in services:
            return True  # its head chose one of them; its body is still coming, so it has no cycle yet
        current = self._current
        if current is not None and current.service in services:
            return True
        return any(cycle.service in services for cycle in self._queue)

    # gateway.cycle.Connection
    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drained(self) -> None:
        if self._write_paused:
            self._drain = self._loop.create_future()
            await self._drain

    def _start_next(self) -> None:
        following = self._current = self._queue.popleft()  # first: a connection answering owes nothing
        if len(self._queue) < self._limits.read_ahead:
            self._resume(_QUEUE_FULL)
        following.start()

    def done(self, cycle: Cycle) -> None:
        self._current = None
        self._bodies.release(cycle.held)
        cycle.held = 0
        if self._transport is None or self._transport.is_closing():
            return
        if not cycle.keep_alive or (self._closing and not self._queue):
            self._close()
            return
        if self._queue:
            if not self._paused_for & _OUTPUT_FULL:  # else resume_writing starts it
                self._start_next()
        elif self._phase == _WAIT:
            self._deadline = self._server.clock + self._limits.keep_alive_timeout

    def _close(self) -> None:
        """Close after the answer; if the client may still be sending a refused body, drain it first.

        Closing a socket with unread input resets the connection, which can destroy the error answer
        before the client reads it; so half-close, discard what still comes, and close after LINGER.
        """
        assert self._transport is not None
        if self._ignoring and self._transport.can_write_eof():
            self._transport.write_eof()
            self._transport.resume_reading()
            self._linger = self._loop.call_later(LINGER, self._transport.close)
        else:
            self._transport.close()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None


class Server:
    """Listens on one address and owns every client connection, for a clean shutdown."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        access: Access | None = None,
        origins: Origins | None = None,
        limits: Limits | None = None,
        control: Control | None = None,
        metrics: bool = True,
        journal: Journal | None = None,
    ) -> None:
        """`journal`: where accepted asynchronous requests are written down (None: in memory only)."""
        self.control = control
        self.journal = journal
        self.origins = origins or Origins(host)
        self.metrics = metrics  # the local SageMaker's GET /metrics (each endpoint's are its service's)
        self.access = access
        self._by_name: dict[bytes, Variants] = {}  # endpoint name -> its variants
        self._queues: dict[str, AsyncQueue] = {}  # endpoint name -> its InvokeEndpointAsync queue
        self._closing_queues: set[asyncio.Task[None]] = set()
        self._only: Variants | None = None
        self.limits = limits or Limits()
        self.bodies = BodyBudget(self.limits.max_buffered_bodies)
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.clock = (
            self.loop.time()
        )  # the sweep's clock: deadlines need seconds, not a clock read per request
        self.connections: set[HttpProtocol] = set()
        self.request_ids = wire.RequestIds()
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self._turned_away = 0
        self._turned_away_logged = -math.inf

    async def start(self) -> tuple[str, int]:
        """Start listening; return the bound address (the port the OS chose when asked for 0)."""
        self._server = await self.loop.create_server(
            lambda: HttpProtocol(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        self._sweeper = self.loop.call_later(self.limits.sweep, self._sweep)
        sockets = cast(Any, self._server).sockets  # uvloop's is a list, asyncio's a tuple (D24)
        sockname = sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def mount(
        self,
        name: str,
        variants: list[tuple[Service, float]],
        asynchronous: AsyncConfig | None = None,
        components: dict[str, Service] | None = None,
    ) -> None:
        """Serve endpoint `name` at `/endpoints/{name}/invocations` from these variants (and at
        `/invocations`, `/ping` and `/metrics` while it is the only endpoint); with `asynchronous`, also
        InvokeEndpointAsync, from a queue that outlives a remount (an update) of the endpoint."""
        mounted = self._by_name[name.encode()] = Variants(variants, components)
        self._only = next(iter(self._by_name.values())) if len(self._by_name) == 1 else None
        queue = self._queues.get(name)
        if asynchronous is None:
            if queue is not None:
                self._close_queue(name, gone=True)
        elif queue is None or queue.config != asynchronous:
            handed = queue.hand_over() if queue is not None else []  # each keeps the locations it was told
            if queue is not None:
                self._close_queue(name)
            self._queues[name] = AsyncQueue(name, asynchronous, mounted, self.journal, handed)
        else:
            queue.variants = mounted
        for variant in variants:  # the queue's depth and age are reported with the endpoint's first variant
            metrics = variant[0].telemetry.metrics
            if metrics is not None:
                metrics.queue = self._queues.get(name) if variant is variants[0] else None

    def names(self) -> list[str]:
        """The endpoints mounted now."""
        return [name.decode() for name in self._by_name]

    def unmount(self, name: str) -> None:
        self._by_name.pop(name.encode(), None)
        self._only = next(iter(self._by_name.values())) if len(self._by_name) == 1 else None
        if name in self._queues:
            self._close_queue(name, gone=True)

    def queue(self, name: str) -> AsyncQueue | None:
        """Endpoint `name`'s asynchronous queue, if it is configured for InvokeEndpointAsync."""
        return self._queues.get(name)

    def submit(
        self, name: str, headers: dict[bytes, bytes], body: bytes
    ) -> Callable[[bytes, bool], Awaitable[bytes]]:
        """Queue an InvokeEndpointAsync request; its answer (202, and where the result will be)."""
        queue = self._queues[name]
        job = job_from(headers, body, queue.config)
        queue.submit(job)

        async def answer(rid: bytes, close: bool) -> bytes:
            return accepted(job, rid, close)

        return answer

    def _close_queue(self, name: str, *, gone: bool = False) -> None:
        """`gone`: the endpoint takes no asynchronous requests any more; those not answered fail."""
        closing = asyncio.get_running_loop().create_task(self._queues.pop(name).close(gone=gone))
        self._closing_queues.add(closing)
        closing.add_done_callback(self._closing_queues.discard)

    def local_operation(self, method: bytes, path: bytes) -> Operation:
        """The local SageMaker's own paths: the control plane at POST /, every endpoint's metrics at
        GET /metrics."""
        if path == b"/" and method == b"POST":
            return Operation.CONTROL
        if path == b"/metrics" and method == b"GET":
            if not self.metrics:
                raise UnknownOperation("Metrics are off (mce up --no-metrics).")
            return Operation.METRICS
        raise UnknownOperation(
            "The local SageMaker answers POST / (the control plane, with X-Amz-Target), GET /metrics and "
            f"POST /endpoints/{{EndpointName}}/invocations; not {method.decode('ascii', 'replace')} "
            f"{wire.shown(path)}."
        )

    def answer_for(
        self, operation: Operation | None, target: bytes | None, body: bytes, key: Key | None = None
    ) -> Callable[[bytes, bool], Awaitable[bytes]] | None:
        """How the local SageMaker answers its own paths (gateway.cycle awaits it); None for the rest.
        `key`: who signed the request, when --access is on: the control plane authorizes each operation."""
        control = self.control
        if control is None:
            return None
        if operation is Operation.CONTROL:
            access = self.access
            authorize = partial(access.authorize, key) if access is not None and key is not None else None

            async def control_answer(rid: bytes, close: bool) -> bytes:
                return wire.control_response(await control.call(target, body, authorize), rid, close=close)

            return control_answer
        if operation is Operation.METRICS:
            access = self.access

            def shown(name: str) -> bool:
                return access is None or key is None or access.allows(key, DESCRIBE, access.resource(name))

            async def metrics_answer(rid: bytes, close: bool) -> bytes:
                # mounted variants only: while an update drains the old ones, both have the same labels;
                # under --access, the endpoints the key may describe
                exposition = Metrics.merged(
                    [
                        service.telemetry.metrics
                        for name, variants in list(self._by_name.items())
                        if shown(name.decode("latin-1"))
                        for service in variants.every
                        if service.telemetry.metrics is not None
                    ]
                )
                return wire.text_response(200, exposition, wire.PROMETHEUS, rid, close=close)

            return metrics_answer
        return None

    def service_for(
        self, path: bytes, target_variant: bytes | None = None, component: bytes | None = None
    ) -> Service:
        """The variant of the endpoint a request path names (the only endpoint, for the paths that name
        none) that answers it."""
        name = wire.endpoint_name(path)
        # a path that names an endpoint gets that one or none: never another (access authorizes the name)
        variants = self._by_name.get(name) if name is not None else self._only
        if variants is None:
            if name is not None:
                absent = self.control.absent(name.decode("latin-1")) if self.control is not None else None
                raise absent if absent is not None else unknown_endpoint(name)
            raise UnknownOperation(
                "No endpoint is served here."
                if not self._by_name
                else f"Served here: POST /endpoints/{{EndpointName}}/invocations (and "
                f"/invocations-response-stream, /async-invocations); not {wire.shown(path)}."
            )
        return variants.pick(target_variant, component)

    def _sweep(self) -> None:
        self.clock = now = self.loop.time()
        for connection in list(self.connections):
            connection.check(now)
        self._sweeper = self.loop.call_later(self.limits.sweep, self._sweep)

    def turned_away(self) -> None:
        """A connection came while the gateway holds `max_connections`: count it, and say so now and then."""
        self._turned_away += 1
        if self.clock - self._turned_away_logged >= TURNED_AWAY_LOG_EVERY:
            self._turned_away_logged = self.clock
            logger.warning(
                "%d client connections open, the maximum (--max-connections): new ones are answered 503 "
                "(%d so far)",
                len(self.connections),
                self._turned_away,
            )

    def answering(self, services: Collection[Service]) -> bool:
        """Whether any request reaching one of `services` is still being answered, or waits to be (a
        variant being replaced drains: gateway.control)."""
        return any(connection.answering(services) for connection in self.connections) or any(
            queue.answering(services) for queue in self._queues.values()
        )

    def forget(self, connection: HttpProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let answers in progress finish within `grace` seconds, then cut the rest."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.connections:
            self._all_closed.clear()
            for connection in list(self.connections):
                connection.shutdown()
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
            except TimeoutError:
                logger.warning(
                    "%d connection(s) still busy after %.0f s; closing them", len(self.connections), grace
                )
                for connection in list(self.connections):
                    connection.abort()
        for name in list(self._queues):  # with a journal, what is unanswered runs after a restart
            self._close_queue(name)
        await asyncio.gather(*self._closing_queues, return_exceptions=True)
        if self.journal is not None:
            self.journal.close()
        if self._server is not None:
            await self._server.wait_closed()
