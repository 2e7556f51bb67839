"""Where a request enters: the HTTP/1.1 front door, an `asyncio.Protocol` fed by the httptools parser.

Per connection, requests are answered in order (pipelined ones wait in a queue). The request line and
headers are checked as soon as they are parsed, so a request that cannot succeed (unknown route, bad
header, a body over 6 MiB by its Content-Length) is refused without reading its body. A request body
is buffered whole (it is capped at 6 MiB by the API); the answer is streamed: a reply that arrives whole
within `STREAM_THRESHOLD` goes out in one write, a larger one is relayed as it arrives, with reading from
the container paused while the client is slow. Every failure leaves here as a SageMaker error
(`gateway.wire.error_response`); once a streamed answer has begun, a failure can only cut the connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools

from gateway import wire
from gateway.backends import Reply
from gateway.backends.base import Exchange
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, InternalFailure, ModelError, UnknownOperation, ValidationError
from gateway.invocation import Invocation, invocation_from
from gateway.routing import Operation, Route
from gateway.telemetry import Telemetry, now

if TYPE_CHECKING:
    from gateway.access import Access

logger = logging.getLogger(__name__)

STREAM_THRESHOLD = 64 * 1024
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
LINGER = 5.0  # after refusing a request mid-body, keep draining the client this long before closing
MAX_PIPELINE = 16  # queued requests on one connection before reading pauses


@dataclass(slots=True)
class _Request:
    rid: bytes
    operation: Operation | None
    route: Route | None
    call: Invocation | None
    error: GatewayError | None
    keep_alive: bool
    marks: list[float] | None = None  # gateway.telemetry: received, then sent/answered per container
    failure: GatewayError | None = None  # what the client was answered, if not a 2xx


def body_too_large(size: int | None) -> ValidationError:
    measured = f"{size} bytes" if size is not None else f"over {wire.MAX_BODY} bytes"
    return ValidationError(
        f"Request body is {measured}; InvokeEndpoint accepts at most {wire.MAX_BODY} bytes (6 MB)."
    )


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._dataplane = server.dataplane
        self._router = server.dataplane.router
        self._access = server.access
        self._telemetry = server.telemetry
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # the request being parsed
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._operation: Operation | None = None
        self._route: Route | None = None
        self._call: Invocation | None = None
        self._rejected: GatewayError | None = None
        self._ignoring = False  # after a refusal that ends the connection, later bytes are not parsed
        # the requests being answered: one at a time, by a task or, on the cheap path, by callbacks
        self._queue: collections.deque[_Request] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._inflight: _Request | None = None  # answered through the Receiver callbacks below
        self._exchange: Exchange | None = None
        self._hop = 0  # which container of the route the cheap path is waiting on
        self._sent: Invocation | None = None  # and what it was sent
        self._head_sent = False
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
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.forget(self)
        if self._task is not None:
            self._task.cancel()  # nobody is left to answer; stop waiting on the container
        if self._exchange is not None:
            self._exchange.abandon()
        self._inflight = self._exchange = None
        self._queue.clear()
        self._wake_drain()
        if self._linger is not None:
            self._linger.cancel()

    def data_received(self, data: bytes) -> None:
        if self._ignoring:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(ValidationError("Protocol upgrades are not supported."))
        except httptools.HttpParserError as exc:
            self._refuse(ValidationError(f"Malformed HTTP request: {exc}."))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def shutdown(self) -> None:
        """Finish the answer in progress, if any, then close."""
        self._closing = True
        if not self._busy and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._operation = None
        self._route = None
        self._call = None
        self._rejected = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        headers = self._headers
        try:
            self._operation = operation = self._router.operation(self._parser.get_method(), self._url)
            if operation is Operation.INVOKE:
                length = headers.get(wire.CONTENT_LENGTH)
                if length is not None and int(length) > wire.MAX_BODY:
                    self._refuse(body_too_large(int(length)))  # refused before the body is read
                    return
                self._call = invocation_from(headers)
                self._route = self._router.route(headers.get(wire.TARGET_CONTAINER), self._call.target_model)
        except GatewayError as error:
            self._rejected = error
            return
        if headers.get(wire.EXPECT, b"").lower() == b"100-continue" and not self._busy:
            self._write(wire.CONTINUE)

    def on_body(self, body: bytes) -> None:
        # a rejected body is still read for the signature check, which comes first (gateway.access)
        if self._ignoring or (self._rejected is not None and self._access is None):
            return
        self._body_size += len(body)
        if self._body_size > wire.MAX_BODY:
            self._refuse(body_too_large(None))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._ignoring:
            return
        keep_alive = self._parser.should_keep_alive() and not self._closing
        call = self._call
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if call is not None and self._rejected is None:
            call.body = body
        if self._access is not None and self._operation is Operation.INVOKE:
            # who is asking comes before what is wrong with the request: no container names to strangers
            try:
                self._access.check(self._parser.get_method(), self._url, self._headers, body, self._router.endpoint_name)
            except GatewayError as error:
                self._rejected = error
        rid = self._server.request_ids.next()
        if call is not None and call.traceparent is None:
            trace = rid.replace(b"-", b"")  # a fresh trace, named after the request: 32 hex digits
            call.traceparent = b"00-" + trace + b"-" + trace[16:] + b"-01"
        marks = [now()] if self._telemetry.enabled and call is not None else None
        self._enqueue(_Request(rid, self._operation, self._route, call, self._rejected, keep_alive, marks))

    # answering
    @property
    def _busy(self) -> bool:
        return self._task is not None or self._inflight is not None

    def _enqueue(self, request: _Request) -> None:
        if not self._busy:
            self._dispatch(request)
        else:
            self._queue.append(request)
            if len(self._queue) >= MAX_PIPELINE and self._transport is not None:
                self._transport.pause_reading()

    def _dispatch(self, request: _Request) -> None:
        """The cheap path when the first container can take the request (no task, no future), else a task."""
        if request.error is None and request.route is not None:
            assert request.call is not None
            if self._begin(request, 0, self._dataplane.entry(request.route, request.call)):
                return
        self._task = self._loop.create_task(self._answer(request))

    def _begin(self, request: _Request, hop: int, sent: Invocation) -> bool:
        assert request.route is not None
        self._inflight, self._hop, self._sent = request, hop, sent
        if request.marks is not None:
            request.marks.append(now())
        self._exchange = request.route[hop].begin(sent, self, STREAM_THRESHOLD)
        if self._exchange is None:
            self._inflight = None
            if request.marks is not None:
                request.marks.pop()  # not sent after all: the coroutine path will mark it
            return False
        return True

    # Receiver: how a request on the cheap path goes on, or ends
    def reply(self, reply: Reply) -> None:
        hop, sent = self._hop, self._sent
        request = self._settle()
        assert request.route is not None and request.call is not None and sent is not None
        if hop < len(request.route) - 1:  # an inner container of a pipeline answered
            if not reply.complete:  # a large answer: read on in a task
                work = self._dataplane.continue_after(request.route, hop, request.call, sent, reply, request.marks)
                self._task = self._loop.create_task(self._finish(self._relay_from(work, request), request))
                return
            if request.marks is not None:
                request.marks.append(now())
            body = b"".join(reply.take())
            following = self._dataplane.hand_on(request.route, hop, request.call, sent, reply, body)
            if not self._begin(request, hop + 1, following):
                self._task = self._loop.create_task(self._answer(request, hop + 1, following))
            return
        if reply.complete:
            if request.marks is not None:
                request.marks.append(now())
            chunks = reply.take()
            self._write_whole(reply, request, chunks, sum(map(len, chunks)))
            self._next(request)
        else:  # a large answer: a task relays the rest as it arrives
            self._task = self._loop.create_task(self._finish(self._relay(reply, request), request))

    def error(self, error: ModelError) -> None:
        request = self._settle()
        self._send_error(error, request)
        self._next(request)

    def retry(self) -> None:
        hop, sent = self._hop, self._sent
        request = self._settle()
        if request.marks is not None:
            request.marks.pop()  # that attempt never reached the container; the coroutine path marks its own
        self._task = self._loop.create_task(self._answer(request, hop, sent))

    def _settle(self) -> _Request:
        request = self._inflight
        assert request is not None, "a callback without a request in flight"
        self._inflight = self._exchange = self._sent = None
        self._head_sent = False
        return request

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` and close the connection, reading nothing more."""
        self._ignoring = True
        if self._transport is not None:
            self._transport.pause_reading()
        self._enqueue(_Request(self._server.request_ids.next(), None, None, None, error, keep_alive=False))

    async def _answer(self, request: _Request, hop: int = 0, sent: Invocation | None = None) -> None:
        self._head_sent = False
        await self._finish(self._work(request, hop, sent), request)

    async def _work(self, request: _Request, hop: int, sent: Invocation | None) -> None:
        if request.error is not None:
            self._send_error(request.error, request)
        elif request.operation is Operation.METRICS:
            metrics = self._telemetry.metrics
            if metrics is None:
                raise UnknownOperation("Metrics are off (mce serve --no-metrics).")
            self._write(wire.text_response(200, metrics.exposition(), PROMETHEUS, request.rid, close=not request.keep_alive))
        elif request.operation is Operation.PING:
            health = await self._dataplane.health()
            self._write(
                wire.json_response(
                    200 if health.ready else 503, health.document(), request.rid, close=not request.keep_alive
                )
            )
        else:
            assert request.route is not None and request.call is not None
            if sent is None:
                sent = self._dataplane.entry(request.route, request.call)
            await self._relay_from(self._dataplane.run(request.route, hop, request.call, sent, request.marks), request)

    async def _relay_from(self, work: Coroutine[None, None, Reply], request: _Request) -> None:
        await self._relay(await work, request)

    async def _finish(self, work: Coroutine[None, None, None], request: _Request) -> None:
        """Run the answering `work`; whatever it raises becomes the error answer; then the next request."""
        try:
            await work
        except GatewayError as error:
            self._send_error(error, request)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("request %s failed inside the gateway", request.rid.decode())
            self._send_error(InternalFailure("The gateway failed while handling the request."), request)
        self._next(request)

    def _next(self, done: _Request) -> None:
        self._task = None
        if done.marks is not None and done.route is not None:
            self._telemetry.finish(
                done.rid, self._router.names[done.route], done.marks, done.failure,
                done.call.inference_id if done.call is not None else None,
            )
        if self._transport is None or self._transport.is_closing():
            return
        if not done.keep_alive or (self._closing and not self._queue):
            self._close()
            return
        if self._queue:
            if len(self._queue) == MAX_PIPELINE:
                self._transport.resume_reading()
            self._dispatch(self._queue.popleft())

    async def _relay(self, reply: Reply, request: _Request) -> None:
        """Send a container's 2xx reply to the client: whole if small, else streamed as it arrives."""
        close = not request.keep_alive
        try:
            chunks = reply.take()
            size = sum(map(len, chunks))
            while not reply.complete and size < STREAM_THRESHOLD:
                await reply.wait()
                more = reply.take()
                chunks += more
                size += sum(map(len, more))
            if reply.complete:
                if request.marks is not None:
                    request.marks.append(now())
                self._write_whole(reply, request, chunks, size)
                return
            length = reply.content_length
            self._write(
                wire.invocation_head(
                    request.rid, reply.content_type, reply.custom_attributes, length=length, close=close,
                    timing=self._timing(request),
                )
            )
            self._head_sent = True
            chunked = length is None
            self._write_body(chunks, chunked)
            while not reply.complete:
                await self._drained()
                await reply.wait()
                self._write_body(reply.take(), chunked)
            self._write_body(reply.take(), chunked)
            if chunked:
                self._write(wire.LAST_CHUNK)
        finally:
            if not reply.complete:
                reply.abandon()

    def _write_whole(self, reply: Reply, request: _Request, chunks: list[bytes], size: int) -> None:
        """A whole answer in one write: head and body together."""
        head = wire.invocation_head(
            request.rid, reply.content_type, reply.custom_attributes, length=size, close=not request.keep_alive,
            timing=self._timing(request),
        )
        self._write(b"".join([head, *chunks]))

    def _timing(self, request: _Request) -> bytes | None:
        if request.marks is None or request.route is None:
            return None
        return self._telemetry.server_timing(self._router.timing[request.route], request.marks)

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

    def _write_body(self, chunks: list[bytes], chunked: bool) -> None:
        for piece in chunks:
            self._write(wire.chunk(piece) if chunked else piece)

    def _send_error(self, error: GatewayError, request: _Request) -> None:
        request.failure = error
        logger.info("request %s: %s: %s", request.rid.decode(), error.code, error.message)
        if self._head_sent:
            # The answer is already on its way; the only honest signal left is to cut it short.
            self.abort()
            return
        self._write(wire.error_response(error, request.rid, close=not request.keep_alive))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _drained(self) -> None:
        if self._write_paused:
            self._drain = self._loop.create_future()
            await self._drain

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None


class Server:
    """Listens on one address and owns every client connection, for a clean shutdown."""

    def __init__(
        self, dataplane: DataPlane, *, host: str, port: int, access: Access | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.access = access
        self.telemetry = telemetry or Telemetry(None)
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.request_ids = wire.RequestIds()
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()

    async def start(self) -> tuple[str, int]:
        """Start listening; return the bound address (the port the OS chose when asked for 0)."""
        self._server = await self.loop.create_server(
            lambda: HttpProtocol(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def forget(self, connection: HttpProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let answers in progress finish within `grace` seconds, then cut the rest."""
        if self._server is not None:
            self._server.close()
        if self.connections:
            self._all_closed.clear()
            for connection in list(self.connections):
                connection.shutdown()
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
            except TimeoutError:
                logger.warning("%d connection(s) still busy after %.0f s; closing them", len(self.connections), grace)
                for connection in list(self.connections):
                    connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
