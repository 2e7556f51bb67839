"""Keep-alive HTTP/1.1 connections from the gateway to one container: where a request leaves over HTTP.

An `asyncio.Protocol` client fed by the httptools response parser, and a pool of idle connections per
container. A request is written in one `transport.write`; the response head resolves a future, the body
is buffered in a bounded list (reading pauses above `HIGH_WATER`) for the caller to take or stream on.
Every exchange has one deadline, enforced by the pool's periodic sweep, that fails whatever waits on it.
A request is never sent twice: a pooled connection is checked for a close by the container before it is
reused, and once a request is written, any failure is the caller's answer (docs/decisions.md D8).

Failures are `UpstreamError`s, which the backends translate into the SageMaker errors a client sees:

    UpstreamError
    ├── ConnectFailed        the container refused or did not accept the connection
    ├── ConnectionClosed     the container closed the connection before the response was complete
    ├── ProtocolViolation    the bytes were not an HTTP/1.1 response
    └── UpstreamTimeout      the deadline passed
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import select
import socket
from typing import Final, Protocol, cast

import httptools

from gateway.wire import LOWERED, Unheard, lowered

logger = logging.getLogger(__name__)

HIGH_WATER: Final = 256 * 1024  # pause reading a response nobody is consuming above this many bytes
MAX_IDLE: Final = 128  # idle connections kept per container
SWEEP: Final = 0.1  # seconds between deadline checks; a deadline fires at most this late


class UpstreamError(Exception):
    """The container could not be talked to."""


class ConnectFailed(UpstreamError):
    pass


class ConnectionClosed(UpstreamError):
    pass


class ProtocolViolation(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class Response:
    """One response from a container: head at once, body as it arrives (bounded by HIGH_WATER)."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_waiter", "complete", "headers", "status")

    def __init__(self, conn: Connection) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.complete = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._conn: Connection | None = conn

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def content_length(self) -> int | None:
        value = self.headers.get(b"content-length")
        return int(value) if value is not None and value.isdigit() else None

    def take(self) -> list[bytes]:
        """The body chunks received so far (and not yet taken)."""
        chunks = self._chunks
        self._chunks = []
        self._buffered = 0
        if self._conn is not None:
            self._conn.resume()
        return chunks

    async def wait(self) -> None:
        """Wait until more body arrives or the response ends; raise if it failed."""
        if self._error is not None:
            raise self._error
        if self.complete or self._chunks:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self, limit: int) -> bytes:
        """The whole body; `BodyTooLarge` as soon as it would pass `limit` bytes."""
        body = bytearray()
        while True:
            for piece in self.take():
                body += piece
            if len(body) > limit:
                self.abandon()
                raise BodyTooLarge(len(body))
            if self.complete:
                return bytes(body)
            await self.wait()

    def abandon(self) -> None:
        """Stop reading: an unfinished response leaves its connection unusable, so close it."""
        if not self.complete and self._conn is not None:
            self._conn.close()
        self._conn = None

    # Called by the connection.
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._conn = None
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Listener(Protocol):
    """Who is told about an exchange started with `Connection.begin` (callbacks instead of awaiting)."""

    def complete(self, response: Response) -> None:
        """The whole response arrived (the connection is already back in its pool)."""

    def overflow(self, response: Response) -> None:
        """The body passed `Listener.limit` bytes before it ended: from now on, consume `response` itself."""

    def failed(self, error: UpstreamError) -> None:
        """The exchange failed before the response was whole."""


class BodyTooLarge(Exception):
    """A body that would pass the limit its reader set (`Response.read`, `Reply.read`)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"body passed {received} bytes")
        self.received = received


_CLOSED: Final = httptools.HttpResponseParser(Unheard())


class Connection(asyncio.Protocol):
    """One keep-alive connection to a container; carries one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._head_waiter: asyncio.Future[Response] | None = None
        self._listener: Listener | None = None
        self._listen_limit = 0
        self.deadline = 0.0  # of the exchange in flight; the pool's sweep enforces it
        self._stall = 0.0  # > 0: a streamed answer, whose deadline moves this far on with each piece of body
        self._paused = False
        self._poll: select.poll | None = None
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)

    def stale(self) -> bool:
        """True when this idle connection cannot carry a request: the container closed it (or sent bytes
        unasked) and the event loop has not yet told us. One poll(2) with a zero timeout."""
        return self.closed or (self._poll is not None and bool(self._poll.poll(0)))

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # data while idle: the container broke the protocol; drop it
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolViolation(f"not a valid HTTP response ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.discard(self)
        response = self._response
        if response is not None:
            if response.status < 200:  # no head yet
                reason = "reset the connection" if exc is not None else "closed the connection"
                self._fail(ConnectionClosed(f"{reason} before answering"))
            elif response.content_length is None and b"transfer-encoding" not in response.headers:
                self._finish_exchange(response)  # a close-delimited body ends with the connection
            else:
                self._fail(ConnectionClosed("closed the connection in the middle of its response"))
        # the parser holds this protocol's callbacks: swap it for one that holds none, so a closed
        # connection is freed at once, not by the cycle collector (compiled, `del` did not, D54)
        self._parser = _CLOSED
        self._poll = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers[LOWERED.get(name) or lowered(name)] = value

    def on_headers_complete(self) -> None:
        response = self._response
        if response is None:
            return
        response.status = self._parser.get_status_code()
        if response.status < 200:  # an interim 1xx: the real head follows
            response.headers = {}
            return
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None:
            if self._stall and not self._paused:  # paused: the stream waits for its client (pause())
                self.deadline = self._loop.time() + self._stall
            response._feed(body)
            listener = self._listener
            if listener is not None and response.buffered > self._listen_limit:
                self._listener = None
                listener.overflow(response)

    def on_message_complete(self) -> None:
        response = self._response
        if response is not None and response.status >= 200:
            self._finish_exchange(response)

    # the exchange
    def begin(
        self, data: bytes | list[bytes], deadline: float, listener: Listener, limit: int, stall: float = 0.0
    ) -> None:
        """Send a request and report to `listener`: the whole response, or an overflow past `limit`
        bytes of body, or a failure. No future, no task: the cheap path for small answers. `stall` > 0:
        once the body flows, the deadline is that many seconds after its latest piece (a stream)."""
        self._listener = listener
        self._listen_limit = limit
        self._send(data, deadline, stall)

    def abandon(self) -> None:
        """The caller of `begin` went away: this connection cannot be reused."""
        self._listener = None
        self.close()

    async def exchange(self, data: bytes | list[bytes], deadline: float, stall: float = 0.0) -> Response:
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._head_waiter = waiter
        self._send(data, deadline, stall)
        try:
            return await waiter
        except asyncio.CancelledError:
            self.close()  # the caller went away mid-exchange; this connection cannot be reused
            raise

    def _send(self, data: bytes | list[bytes], deadline: float, stall: float) -> None:
        assert self._transport is not None
        self._response = Response(self)
        self.deadline = deadline
        self._stall = stall
        self._pool.track(self)
        if isinstance(data, bytes):
            self._transport.write(data)
        else:
            self._transport.writelines(data)

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
            if self._stall:  # a stream waits for its client now, not for the container
                self.deadline = math.inf

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
            if self._stall:
                self.deadline = self._loop.time() + self._stall

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()
        self._pool.discard(self)

    def expire(self) -> None:
        """The exchange's deadline passed: fail whoever waits, and drop the connection."""
        self._fail(UpstreamTimeout("did not finish answering in time"))
        self.close()

    def _finish_exchange(self, response: Response) -> None:
        self._end_deadline()
        self._response = None
        keep_alive = not self.closed and self._parser.should_keep_alive()
        response._finish()
        if keep_alive:
            self.resume()
            self._pool.release(self)
        else:
            self.close()
        listener = self._listener
        if listener is not None:
            self._listener = None
            listener.complete(response)

    def _fail(self, error: UpstreamError) -> None:
        self._end_deadline()
        response = self._response
        self._response = None
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if response is not None:
            response._fail(error)
        listener = self._listener
        if listener is not None:
            self._listener = None
            listener.failed(error)

    def _end_deadline(self) -> None:
        self._pool.untrack(self)


class Pool:
    """Idle keep-alive connections to one container (`host:port`), opened on demand.

    Deadlines are enforced by one sweep every `SWEEP` seconds while exchanges are in flight, rather than a
    timer per exchange: arming and cancelling a timer per request costs more than the whole sweep, and a
    deadline of seconds does not need millisecond precision.
    """

    def __init__(self, host: str, port: int, *, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.loop = asyncio.get_running_loop()
        # the latest released last, reused first; a list: compiled, its pop and append are direct calls
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._active: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._numeric = _numeric(host, port)

    def track(self, conn: Connection) -> None:
        self._active.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP, self._sweep)

    def untrack(self, conn: Connection) -> None:
        self._active.discard(conn)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self._active if c.deadline <= now]:
            conn.expire()
        self._sweeper = self.loop.call_later(SWEEP, self._sweep) if self._active else None

    def idle(self) -> Connection | None:
        """An idle keep-alive connection the container has not closed, if there is one."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.stale():
                return conn
            logger.debug(
                "idle connection to %s:%s was closed by the container; not reused", self.host, self.port
            )
            conn.close()
        return None

    async def request(self, data: bytes | list[bytes], *, timeout: float, stall: float = 0.0) -> Response:
        """Send one request (head and body, already framed) and return once the response head is in.
        `stall` > 0: a streamed answer, due within `stall` seconds of its latest piece of body.

        Never sent twice: once written, the container may have read it, so a failure is the answer.
        """
        deadline = self.loop.time() + timeout
        conn = self.idle()
        if conn is None:
            conn = await self._connect(deadline)
        return await conn.exchange(data, deadline, stall)

    async def _connect(self, deadline: float) -> Connection:
        timeout = min(self.connect_timeout, max(deadline - self.loop.time(), 0.0))
        try:
            async with asyncio.timeout(timeout):
                sock = await self._socket()
            # connected already: nothing here waits on the network, so nothing is cancelled half-way
            _, conn = await self.loop.create_connection(lambda: Connection(self), sock=sock)
        except TimeoutError:
            raise ConnectFailed(f"did not accept a connection within {timeout:g} s") from None
        except socket.gaierror as exc:
            raise ConnectFailed(f"could not be resolved ({exc.strerror or exc})") from exc
        except ConnectionRefusedError as exc:
            raise ConnectFailed(f"refused the connection ({exc.strerror or exc})") from exc
        except OSError as exc:
            raise ConnectFailed(f"could not be reached ({exc.strerror or exc})") from exc
        self._all.add(conn)
        return conn

    async def _socket(self) -> socket.socket:
        """A socket connected to the container, made and connected here and then handed to the loop.
        uvloop's `create_connection(host, port)` could leave a connect it never saw complete once a
        container had restarted (every later connection to it then timed out: docs/decisions.md D40)."""
        address: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
        if self._numeric is not None:  # an address already: nothing to resolve
            family, address = self._numeric
            sock = socket.socket(family, socket.SOCK_STREAM)
        else:
            found = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, kind, protocol, _, address = found[0]
            sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            await self.loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    def release(self, conn: Connection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def discard(self, conn: Connection) -> None:
        self._all.discard(conn)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


def _numeric(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]] | None:
    """The family and address of a numeric IPv4 or IPv6 `host`; None for a name to resolve."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (str(ip), port)
