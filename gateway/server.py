"""Where a request enters: the HTTP/1.1 front door, an `asyncio.Protocol` fed by the httptools parser.

Per connection, requests are answered in order; one complete request may wait behind the one being
answered (`Limits.read_ahead`), then reading pauses, as it does while the client is not taking its
answers. The request line and headers are checked as soon as they are parsed, so a request that cannot
succeed (unknown route, bad header, a body over 6 MiB by its Content-Length) is refused without reading
its body. What routes a request is frozen when its head is complete: trailers are read and dropped, so
the access check after the body judges exactly the headers the route was chosen from. A request body is
buffered whole (capped at 6 MiB by the API, and across all connections by `Limits.max_buffered_bodies`).

The connection parses, queues and writes. What a request is (its endpoint, variant, operation and route,
or its refusal) is the front door's decision (gateway.frontdoor), made into a `Cycle` (gateway.cycle), the
one driver that runs it; the cycle answers through the connection's responders, which frame its answer as
HTTP: the runtime API's (`HttpResponder`) and the control plane's, AWS JSON 1.1 (`ControlResponder`).

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
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from gateway import eventstream, wire
from gateway.cycle import Cycle
from gateway.errors import GatewayError, ModelError, RequestRefused, ServiceUnavailable, ValidationError
from gateway.frontdoor import BODIED, FrontDoor, body_too_large
from gateway.limits import BodyBudget, Limits
from gateway.routing import Operation
from gateway.service import Service

if TYPE_CHECKING:
    from gateway.backends import Reply


logger = logging.getLogger(__name__)

LINGER: Final = 5.0  # after refusing a request mid-body, keep draining the client this long before closing
TURNED_AWAY_LOG_EVERY: Final = 10.0  # seconds between log lines about connections refused at the cap

# Where the parser is in the request it reads, for the client's deadlines.
_WAIT: Final = 0  # between requests: no byte of the next one yet
_HEAD: Final = 1  # request line and headers
_BODY: Final = 2
# Why reading is paused (a bit each).
# A read this small that begins a request is parsed in one call, not split at message boundaries.
_WHOLE_READ: Final = 16 * 1024
# What a request line holds besides its target: the method, spaces, "HTTP/1.1".
_LINE_EXTRA: Final = 32
_QUEUE_FULL: Final = 1  # a request is already waiting behind the one being answered
_OUTPUT_FULL: Final = 2  # the client is not taking its answers

# Headers the gateway reads: a request that repeats one is refused, so nobody can say two things at once.
_SINGLE: Final = frozenset(
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


_BLANK: Final = (32, 9)  # space, tab
_LOWERED: Final = wire.LOWERED


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing; the connection answers `error` and closes."""

    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _timed_out(what: str, seconds: float) -> RequestRefused:
    return RequestRefused(408, "RequestTimeout", f"The request's {what} did not arrive within {seconds:g} s.")


def _no_room() -> ServiceUnavailable:
    """Limits.max_buffered_bodies is reached: 503, which clients retry."""
    return ServiceUnavailable("The gateway holds as many request bodies as it may; retry later.")


_CLOSED = httptools.HttpRequestParser(wire.Unheard())


class _Gone:
    """Where a closed connection's responders answer: nowhere (its cycles were abandoned already)."""

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass

    async def drained(self) -> None:
        pass

    def done(self, cycle: Cycle) -> None:
        pass


_GONE = _Gone()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._door = server.door
        self._authenticates = server.door.access is not None  # a refused body is still read to check it
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
        self._method = b""  # the parser's, asked once per request
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._held = 0
        self._buffering = True
        self._shed = False  # refused for want of room: not authenticated, body not kept
        self._upgrade = False
        self._cycle: Cycle | None = None  # the request being read, as the front door admitted it
        self._ignoring = False  # after a refusal that ends the connection, later bytes are not parsed
        self._paused_for = 0  # _QUEUE_FULL | _OUTPUT_FULL
        # the requests being answered, one at a time, each by its cycle
        self._queue: collections.deque[Cycle] = collections.deque()
        self._current: Cycle | None = None
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        # where cycles answer: gateway.frontdoor.Client
        self.runtime = HttpResponder(self)
        self.control = ControlResponder(self)

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
                    server.door.request_ids.next(),
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
        # the parser holds this protocol's callbacks, and each responder the protocol: swap the parser for
        # one that holds none and detach the responders, so a closed connection is freed at once, not by
        # the cycle collector (compiled by mypyc, `del` of them left some held until a collection, D54)
        self._parser = _CLOSED
        self.runtime.detach()
        self.control.detach()

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
        self._cycle = None

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
        name = _LOWERED.get(name) or wire.lowered(name)
        headers = self._headers
        if name in headers:
            if self._repeated is None:
                self._repeated = []
            self._repeated.append(name)
        # RFC 9110 §5.5: a field value has no trailing whitespace (tested first: stripping is a call)
        headers[name] = value if not value or value[-1] not in _BLANK else value.rstrip(b" \t")

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._head_bytes = 0
        self._line_left = self._limits.max_url + _LINE_EXTRA
        self._phase = _BODY
        self._deadline = self._server.clock + self._limits.body_timeout
        headers = self._headers
        parser = self._parser
        method = self._method = parser.get_method()
        field = headers.get(wire.CONTENT_LENGTH)
        length = int(field) if field is not None else None  # llhttp has checked it is digits
        self._body_left = length if length is not None and b"transfer-encoding" not in headers else -1
        try:
            self._check_head(parser, headers)
        except GatewayError as error:
            cycle = self._cycle = self._door.refused(error, self)
        else:
            cycle = self._cycle = self._door.admit(method, self._url, headers, length, self)
        if cycle.refusal is not None:
            if cycle.closes:
                self._close_with(cycle)
                return
            # a refused body is still read for the signature check, which comes first (gateway.access)
            self._buffering = self._authenticates
            return
        if cycle.operation in BODIED and length is not None:
            if not self._bodies.take(length):
                self._shed_request(cycle)
                return
            self._held = length
        expect = headers.get(wire.EXPECT)
        if expect is not None and expect.lower() == b"100-continue" and self._current is None:
            self.write(wire.CONTINUE)

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

    def _shed_request(self, cycle: Cycle) -> None:
        """No room for this body (Limits.max_buffered_bodies): answer 503, which clients retry, and drop the
        body."""
        self._shed = True
        self._buffering = False
        cycle.refusal = _no_room()

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
        cycle = self._cycle
        assert cycle is not None
        self._cycle = None
        cycle.keep_alive = not self._closing and not self._upgrade and self._parser.should_keep_alive()
        cycle.held, self._held = self._held, 0
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._door.complete(cycle, self._method, self._url, self._headers, body, authenticate=not self._shed)
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
        """Refuse the request being read (framed as it is answered, if its head is in) and close."""
        reading = self._cycle
        if reading is None:
            self._close_with(self._door.refused(error, self))
        else:
            control = reading.responder is self.control
            self._close_with(self._door.refused(error, self, service=reading.service, control=control))

    def _close_with(self, refused: Cycle) -> None:
        """Answer a refused cycle and close the connection, reading nothing more."""
        if self._transport is not None and not self._paused_for:
            self._transport.pause_reading()
        self._ignoring = True
        self._deadline = math.inf
        self._bodies.release(self._held)
        self._held = 0
        self._body = []
        self._cycle = None
        refused.keep_alive = False
        self._enqueue(refused)

    def answering(self, services: Collection[Service]) -> bool:
        reading = self._cycle
        if self._phase == _BODY and reading is not None and reading.service in services:
            return True  # its head chose one of them; its body is still coming, so it has no cycle yet
        current = self._current
        if current is not None and current.service in services:
            return True
        return any(cycle.service in services for cycle in self._queue)

    # for the responders
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
        """`cycle`'s answer is out: go on with the next request, or close."""
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


class HttpResponder:
    """A cycle's answer as the runtime API's HTTP/1.1 response on one client connection (gateway.cycle's
    Responder): a container's answer whole (head and body in one write), with a Content-Length or chunked,
    or as an event stream (InvokeEndpointWithResponseStream); errors in SageMaker's shape."""

    __slots__ = ("_chunked", "_conn", "_stream")

    def __init__(self, conn: HttpProtocol) -> None:
        self._conn: HttpProtocol | _Gone = conn
        self._chunked = False  # the answer begun is chunked
        self._stream = False  # ... and an event stream

    def whole(self, cycle: Cycle, reply: Reply, chunks: list[bytes], size: int) -> None:
        self._conn.write(b"".join([self._head(cycle, reply, size, False), *chunks]))

    def start(self, cycle: Cycle, reply: Reply, length: int | None) -> None:
        stream = self._stream = cycle.operation is Operation.STREAM
        self._chunked = length is None
        self._conn.write(self._head(cycle, reply, length, stream))

    def body(self, chunks: list[bytes]) -> None:
        write = self._conn.write
        if self._stream:
            write(wire.chunk(eventstream.payload_part(b"".join(chunks))))
        elif self._chunked:
            for piece in chunks:
                write(wire.chunk(piece))
        else:
            for piece in chunks:
                write(piece)

    def end(self) -> None:
        if self._chunked:
            self._conn.write(wire.LAST_CHUNK)

    def document(
        self, cycle: Cycle, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        self._conn.write(
            wire.document_response(
                status, content_type, body, cycle.rid, close=not cycle.keep_alive, extra=extra
            )
        )

    def fail(self, cycle: Cycle, error: GatewayError, begun: bool) -> None:
        if not begun:
            self._conn.write(self._error(cycle, error))
        elif self._stream:  # an event stream can still say so: boto3 raises it while the client iterates
            if isinstance(error, ModelError):
                code = eventstream.TIMEOUT if error.timed_out else eventstream.STREAM_BROKEN
                event = eventstream.model_stream_error(error.message, code)
            else:
                event = eventstream.exception("InternalStreamFailure", {"Message": error.message})
            self._conn.write(wire.chunk(event) + wire.LAST_CHUNK)
        else:  # the answer is already on its way; the only honest signal left is to cut it short
            self._conn.abort()

    async def drained(self) -> None:
        await self._conn.drained()

    def done(self, cycle: Cycle) -> None:
        self._conn.done(cycle)

    def detach(self) -> None:
        """The connection has closed: answer nowhere from now on, and hold it no more."""
        self._conn = _GONE

    def _error(self, cycle: Cycle, error: GatewayError) -> bytes:
        return wire.error_response(error, cycle.rid, close=not cycle.keep_alive)

    @staticmethod
    def _head(cycle: Cycle, reply: Reply, length: int | None, stream: bool) -> bytes:
        """`length` None: a chunked body; `stream`: an event stream, which has no session members
        (InvokeEndpointWithResponseStream cannot open a session)."""
        service = cycle.service
        assert service is not None
        return wire.invocation_head(
            service.ok_head,
            cycle.rid,
            reply.content_type,
            reply.custom_attributes,
            length=length,
            close=not cycle.keep_alive,
            timing=cycle.timing(),
            session=b"" if stream else reply.session_headers,
            stream=stream,
        )


class ControlResponder(HttpResponder):
    """The control plane's answers (AWS JSON 1.1): errors carry their code in `__type`, as botocore reads
    it, whatever refused the request (the control plane, or the front door: a signature, a limit)."""

    __slots__ = ()

    def _error(self, cycle: Cycle, error: GatewayError) -> bytes:
        return wire.control_error(error, cycle.rid, close=not cycle.keep_alive)


class Server:
    """Listens on one address and owns every client connection, for a clean shutdown; what each request is,
    and what answers it, is the front door's (`door`)."""

    def __init__(
        self, door: FrontDoor, *, host: str, port: int, limits: Limits | None = None, reuse_port: bool = False
    ) -> None:
        """`reuse_port`: listen beside other processes on one port (SO_REUSEPORT: mce serve --workers)."""
        self.door = door
        self.reuse_port = reuse_port
        self.limits = limits or Limits()
        self.bodies = BodyBudget(self.limits.max_buffered_bodies)
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.clock = (
            self.loop.time()
        )  # the sweep's clock: deadlines need seconds, not a clock read per request
        self.connections: set[HttpProtocol] = set()
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self._turned_away = 0
        self._turned_away_logged = -math.inf

    async def start(self) -> tuple[str, int]:
        """Start listening; return the bound address (the port the OS chose when asked for 0)."""
        self._server = await self.loop.create_server(
            lambda: HttpProtocol(self),
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
        self._sweeper = self.loop.call_later(self.limits.sweep, self._sweep)
        sockets = cast(Any, self._server).sockets  # uvloop's is a list, asyncio's a tuple (D24)
        sockname = sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

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
        return any(connection.answering(services) for connection in self.connections) or self.door.answering(
            services
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
        await self.door.close()
        if self._server is not None:
            await self._server.wait_closed()
