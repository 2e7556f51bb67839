"""InvokeEndpointWithBidirectionalStream: SageMaker's HTTP/2 runtime service, on a TLS listener of its own.

SageMaker serves this operation apart from the rest of the runtime API (service "SageMaker Runtime HTTP2",
port 8443 on AWS, HTTP/2 over TLS only: its client, `aws-sdk-sagemaker-runtime-http2`, offers ALPN `h2` and
cannot speak HTTP/2 in cleartext). One request is one HTTP/2 stream: `POST
/endpoints/{EndpointName}/invocations-bidirectional-stream`, its body a stream of event-stream messages
(each a `PayloadPart` with `Bytes`, `DataType` UTF8 or BINARY, `CompletionState`, `P`, inside a signed
envelope whose payload is the event), its answer another (`PayloadPart`, or a `ModelStreamError` /
`InternalStreamFailure` exception). The container gets a WebSocket at `/invocations-bidirectional-stream`
on its serving port (`X-Amzn-SageMaker-Model-Invocation-Path` names another path,
`X-Amzn-SageMaker-Model-Query-String` is its query): a UTF8 part becomes a text frame, anything else a
binary frame; each message the container sends becomes one PayloadPart (text: UTF8, binary: BINARY).

Both directions are relayed as they arrive. The container closing the WebSocket ends the answer; a
container that drops it, or closes it with an error code, ends the answer with a ModelStreamError event.
The client ending its input (END_STREAM) does not cut the container short: answers it is still sending go
on, and once it has sent nothing for QUIET_CLOSE seconds mce closes the WebSocket (code 1000) itself (a
WebSocket cannot be half-closed: a close frame at once would lose the answers in flight). The client
leaving (RST_STREAM, a lost connection) closes the WebSocket with 1001. Reading from the client waits
while the container is slow to take its frames (HTTP/2 flow control: a part is acknowledged once it is on
the WebSocket), and frames from the container wait while the client is slow to take the answer.

Who may call it: the same Host and Origin rules as mce's own port (gateway.origins); under `--access`
the listener is not started (its event signatures are not checked yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway import eventstream, wire
from gateway.errors import GatewayError, ModelError, ValidationError
from gateway.origins import Origins
from gateway.service import Service

logger = logging.getLogger(__name__)

SUFFIX = "/invocations-bidirectional-stream"
OPEN_TIMEOUT = 5.0  # seconds for the container to accept the WebSocket (SageMaker asks 250 ms of it)
PING_INTERVAL = 60.0  # seconds between WebSocket pings to the container (SageMaker's)
PING_TIMEOUT = 300.0  # ... and how long its pong may take (SageMaker closes after 5 missed pongs)
MAX_PART = 16 << 20  # bytes of one PayloadPart (or one WebSocket message) at most
IDLE_TIMEOUT = 120.0  # seconds a connection may go without a stream and without a byte before it is closed
QUIET_CLOSE = 10.0  # seconds without a message from the container, after the input ended, before closing
EVENT_STREAM = b"application/vnd.amazon.eventstream"
_PATH = re.compile(r"^/endpoints/([^/?]+)" + re.escape(SUFFIX) + r"\??$")
_INVOCATION_PATH = re.compile(r"[A-Za-z0-9\-._]+(?:/[A-Za-z0-9\-._]+)*")  # the model's pattern, whole
_QUERY = re.compile(r"[A-Za-z0-9\-._~%]+=[A-Za-z0-9\-._~%]*(?:&[A-Za-z0-9\-._~%]+=[A-Za-z0-9\-._~%]*)*")
MAX_INVOCATION_PATH, MAX_QUERY = 100, 2048
# the errors of the HTTP/2 service's model, by the status our errors carry
_ERROR_TYPES = {400: "InputValidationError", 424: "ModelError", 503: "ServiceUnavailableError"}


class Targets(Protocol):
    """Where a bidirectional stream goes (gateway.frontdoor.FrontDoor)."""

    def bidirectional(self, endpoint: str, variant: bytes | None) -> tuple[Service, str, str]:
        """(the variant that answers, its container's name, its host:port); GatewayError if there is none."""

    request_ids: wire.RequestIds


@dataclass(frozen=True)
class Listener:
    """The running HTTP/2 listener: where it listens, and the certificate a client must trust."""

    port: int
    server: asyncio.AbstractServer


async def listen(
    targets: Targets, origins: Origins, context: ssl.SSLContext, host: str, port: int
) -> Listener:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http2(targets, origins), host, port, ssl=context)
    sockets = list(server.sockets)
    return Listener(sockets[0].getsockname()[1], server)


class Http2(asyncio.Protocol):
    """One client connection: HTTP/2 frames in and out (h2's state machine), one Relay per stream."""

    def __init__(self, targets: Targets, origins: Origins) -> None:
        self.targets = targets
        self.origins = origins
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.relays: dict[int, Relay] = {}
        self._transport: asyncio.Transport | None = None
        self._window = asyncio.Event()  # set whenever the client opens its flow-control window
        self._flushing = False  # a write is scheduled for the end of this turn of the loop
        self._idle: asyncio.TimerHandle | None = None
        self._heard = False  # bytes arrived since the last idle check

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.flush()
        self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._idle_check)

    def _idle_check(self) -> None:
        """A connection with no stream for IDLE_TIMEOUT seconds is closed (GOAWAY first)."""
        if self._transport is None:
            return
        if self.relays or self._heard:
            self._heard = False
            self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._idle_check)
            return
        self.h2.close_connection()
        self.flush()
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.info("bidirectional stream: HTTP/2 protocol error: %s", exc)
            self.flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                relay = Relay(self, event.stream_id, dict(event.headers))
                self.relays[event.stream_id] = relay
                relay.start()
            elif isinstance(event, h2.events.DataReceived):
                found = self.relays.get(event.stream_id)
                if found is None:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    found.received(event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamEnded):
                found = self.relays.get(event.stream_id)
                if found is not None:
                    found.input_ended()
            elif isinstance(event, h2.events.StreamReset):
                found = self.relays.pop(event.stream_id, None)
                if found is not None:
                    found.gone()
            elif isinstance(event, h2.events.WindowUpdated):
                self._window.set()
            elif isinstance(event, h2.events.ConnectionTerminated) and self._transport is not None:
                self._transport.close()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        for relay in list(self.relays.values()):
            relay.gone()
        self.relays.clear()
        self._window.set()
        self._transport = None

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    @property
    def open(self) -> bool:
        return self._transport is not None

    async def send(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """`data` on the stream, as the client's flow-control windows allow."""
        while data:
            if not self.open or stream_id not in self.relays:
                return
            size = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size, len(data)
            )
            if size <= 0:
                self.flush()
                self._window.clear()
                await self._window.wait()
                continue
            self.h2.send_data(stream_id, data[:size])
            data = data[size:]
            self._flush_soon()
        if end and self.open and stream_id in self.relays:
            self.h2.end_stream(stream_id)
            self.flush()

    def _flush_soon(self) -> None:
        """Write what h2 has framed once this turn of the loop is over: the container's messages that
        arrived together leave in one write."""
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flushing = False
        self.flush()

    def respond(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.open:
            self.h2.send_headers(stream_id, headers)
            self.flush()

    def fail(self, stream_id: int, rid: bytes, error: GatewayError) -> None:
        """An error before any event: the status and error type the HTTP/2 service's client reads."""
        if not self.open:
            return
        kind = _ERROR_TYPES.get(error.status, "InternalServerError" if error.status >= 500 else error.code)
        members: dict[str, Any] = {"Message": error.message}
        if isinstance(error, ModelError):
            members.update(error.members())
        body = json.dumps(members).encode()
        self.h2.send_headers(
            stream_id,
            [
                (b":status", str(error.status).encode()),
                (b"content-type", wire.JSON_TYPE),
                (b"x-amzn-errortype", kind.encode()),
                (b"x-amzn-requestid", rid),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        self.h2.send_data(stream_id, body, end_stream=True)
        self.flush()
        self.relays.pop(stream_id, None)

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and self.open and stream_id in self.relays:
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(size, stream_id)
            self.flush()


class Relay:
    """One bidirectional stream: the client's events to the container's WebSocket, and back."""

    def __init__(self, conn: Http2, stream_id: int, headers: dict[bytes, bytes]) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.headers = headers
        self.rid = conn.targets.request_ids.next()
        self._decoder = eventstream.Decoder(MAX_PART + 1024)
        self._parts: asyncio.Queue[tuple[str | bytes, int] | None] = asyncio.Queue()
        self._unacknowledged = 0
        self._task: asyncio.Task[None] | None = None
        self._last_heard = 0.0  # when the container last sent a message (loop time)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    # from the connection
    def received(self, data: bytes, size: int) -> None:
        try:
            messages = self._decoder.feed(data)
        except eventstream.EventStreamError as exc:
            self._refuse_input(f"The request body is not an event stream: {exc}")
            return
        if not messages:  # part of a message: taken at once (a part may be larger than the window)
            self.conn.acknowledge(self.stream_id, size)
            return
        self._unacknowledged += size  # acknowledged once the parts it completes are on the WebSocket
        for outer, payload in messages:
            if not payload:  # the signed envelope that says the input ends (END_STREAM follows)
                continue
            try:
                inner, part = eventstream.decode(payload) if ":chunk-signature" in outer else (outer, payload)
            except eventstream.EventStreamError as exc:
                self._refuse_input(f"An event of the request body cannot be read: {exc}")
                return
            if inner.get(":event-type") != "PayloadPart":
                self._refuse_input(f"Unknown request event {inner.get(':event-type')!r} (PayloadPart only).")
                return
            text: str | bytes = part
            if inner.get("DataType", "BINARY") == "UTF8":
                try:
                    text = part.decode("utf-8")
                except UnicodeDecodeError:
                    self._refuse_input("A PayloadPart of DataType UTF8 is not UTF-8.")
                    return
            self._parts.put_nowait((text, self._unacknowledged))
            self._unacknowledged = 0

    def input_ended(self) -> None:
        if self._unacknowledged:
            self._parts.put_nowait((b"", self._unacknowledged))  # nothing to send; its bytes acknowledged
            self._unacknowledged = 0
        self._parts.put_nowait(None)

    def gone(self) -> None:
        """The client has left: the WebSocket is closed (1001) as the relay stops."""
        if self._task is not None:
            self._task.cancel()

    def _refuse_input(self, message: str) -> None:
        self.conn.relays.pop(self.stream_id, None)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.conn.flush()
        logger.info("request %s: bidirectional stream reset: %s", self.rid.decode(), message)
        self.gone()

    # the stream's life
    async def _run(self) -> None:
        try:
            service, container, url = self._target()
        except GatewayError as refusal:
            logger.info("request %s: %s: %s", self.rid.decode(), refusal.code, refusal.message)
            self.conn.fail(self.stream_id, self.rid, refusal)
            return
        try:
            socket = await websockets.connect(
                url,
                open_timeout=OPEN_TIMEOUT,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                max_size=MAX_PART,
                compression=None,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            self._not_accepted(
                service, _model_error(container, url, exc.response.status_code, exc.response.body)
            )
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self._not_accepted(service, _model_error(container, url, None, str(exc).encode()))
            return
        except asyncio.CancelledError:
            return
        self.conn.respond(
            self.stream_id,
            [
                (b":status", b"200"),
                (b"content-type", EVENT_STREAM),
                (b"x-amzn-invoked-production-variant", service.variant.encode()),
                (b"x-amzn-requestid", self.rid),
            ],
        )
        up = asyncio.get_running_loop().create_task(self._up(socket))
        try:
            await self._down(socket)
        except asyncio.CancelledError:
            await socket.close(1001, "the client left")
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
            self.conn.relays.pop(self.stream_id, None)

    def _not_accepted(self, service: Service, error: ModelError) -> None:
        service.locate(error)
        logger.info("request %s: ModelError: %s", self.rid.decode(), error.message)
        self.conn.fail(self.stream_id, self.rid, error)

    def _target(self) -> tuple[Service, str, str]:
        method, path = self.headers.get(b":method"), self.headers.get(b":path", b"").decode("latin-1")
        refusal = self.conn.origins.refusal(self.headers.get(b":authority"), self.headers.get(b"origin"))
        if refusal is not None:
            raise refusal
        found = _PATH.match(path)
        if method != b"POST" or found is None:
            raise ValidationError(
                f"This listener answers POST /endpoints/{{EndpointName}}{SUFFIX}; not "
                f"{(method or b'').decode('latin-1')} {wire.shown(path.encode())}."
            )
        endpoint = found.group(1)
        service, container, address = self.conn.targets.bidirectional(
            endpoint, self.headers.get(wire.TARGET_VARIANT)
        )
        where = SUFFIX
        invocation = self.headers.get(b"x-amzn-sagemaker-model-invocation-path")
        if invocation is not None:
            text = invocation.decode("latin-1")
            if len(text) > MAX_INVOCATION_PATH or not _INVOCATION_PATH.fullmatch(text) or _dots(text):
                raise ValidationError(
                    f"ModelInvocationPath {wire.shown(invocation)} is not a relative path of at most "
                    f"{MAX_INVOCATION_PATH} characters (letters, digits, -._ and /, no . or .. segments)."
                )
            where = "/" + text
        query = self.headers.get(b"x-amzn-sagemaker-model-query-string")
        if query is not None:
            text = query.decode("latin-1")
            if len(text) > MAX_QUERY or not _QUERY.fullmatch(text):
                raise ValidationError(
                    f"ModelQueryString {wire.shown(query)} is not key=value pairs joined by & (at most "
                    f"{MAX_QUERY} characters)."
                )
            where += "?" + text
        return service, container, f"ws://{address}{where}"

    async def _up(self, socket: Any) -> None:
        """The client's parts to the container, each acknowledged to the client once it is sent."""
        loop = asyncio.get_running_loop()
        while True:
            item = await self._parts.get()
            if item is None:
                self._last_heard = max(self._last_heard, loop.time())
                while (quiet := loop.time() - self._last_heard) < QUIET_CLOSE:
                    await asyncio.sleep(QUIET_CLOSE - quiet)  # answers may still be on their way
                await socket.close(1000, "the client ended its input")
                return
            part, acknowledged = item
            if part:
                await socket.send(part)
            self.conn.acknowledge(self.stream_id, acknowledged)

    async def _down(self, socket: Any) -> None:
        """The container's messages to the client, each one PayloadPart, until it closes."""
        try:
            async for message in socket:
                self._last_heard = asyncio.get_running_loop().time()
                if isinstance(message, str):
                    event = _part(message.encode(), "UTF8")
                else:
                    event = _part(bytes(message), "BINARY")
                await self.conn.send(self.stream_id, event)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            reason = closed.rcvd.reason if closed.rcvd is not None else "no close frame"
            logger.info(
                "request %s: the container dropped the WebSocket (%s %s)", self.rid.decode(), code, reason
            )
            text = f"The container closed the stream with {code} ({reason or 'no reason'})."
            await self.conn.send(
                self.stream_id, eventstream.model_stream_error(text, eventstream.STREAM_BROKEN), end=True
            )
            return
        await self.conn.send(self.stream_id, b"", end=True)


def _part(data: bytes, data_type: str) -> bytes:
    return eventstream.message(_headers(data_type), data)


def _dots(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


_ENCODED: dict[str, bytes] = {}


def _headers(data_type: str) -> bytes:
    found = _ENCODED.get(data_type)
    if found is None:
        found = _ENCODED[data_type] = eventstream.headers(
            (":event-type", "PayloadPart"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
            ("DataType", data_type),
            ("CompletionState", "COMPLETE"),
        )
    return found


def _model_error(container: str, url: str, status: int | None, body: bytes | None) -> ModelError:
    """The container did not take the WebSocket."""
    shown = (body or b"")[:1024].decode("utf-8", "replace")
    if status is None:
        return ModelError(
            f"Container {container} did not accept a WebSocket at {url}: {shown}", container=container
        )
    return ModelError(
        f"Received client error ({status}) from {container} when opening a WebSocket at {url}.",
        container=container,
        original_status=status,
        original_message=shown,
    )
