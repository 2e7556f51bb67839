"""One request's cycle: from the moment its head and body are in to its last byte out. The one driver of
every request the front door answers.

A cycle runs its route hop by hop. Each step starts at once where it can: a backend that can `begin` an
exchange (an HTTP container with an idle pooled connection) reports back through the `Receiver`
callbacks below, with no task, future or coroutine frame. From the first step that has to wait (no idle
connection, a protocol that converts, an answer too large to take whole, a model to load, /ping) the
cycle runs that step as a task, and the task feeds the result back into the same steps. So a Serial
hop, streaming a large answer and a client that leaves are steps of one driver, whatever waits.

    start ──▶ send(hop) ──begin──▶ reply / error (callbacks)  ──▶ hand on: send(hop + 1)
                  └────invoke (task)──▶ reply / error            └─▶ last hop: answer whole, or stream (task)
                                                                      ──▶ finish ──▶ connection.done

The connection only parses, queues and writes (gateway.server); what each container of a pipeline is sent
is the data plane's rule (`DataPlane.entry`, `DataPlane.hand_on`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, Protocol

from gateway import eventstream, wire
from gateway.backends import Reply
from gateway.backends.base import Exchange
from gateway.dataplane import DataPlane, read_hop
from gateway.errors import GatewayError, InternalFailure, ModelError, UnknownOperation
from gateway.invocation import Invocation
from gateway.routing import Operation, Route
from gateway.timeline import Timeline

if TYPE_CHECKING:
    from gateway.service import Service

logger = logging.getLogger(__name__)


P = ParamSpec("P")


class Connection(Protocol):
    """The client connection, as a cycle sees it."""

    def write(self, data: bytes) -> None: ...

    async def drained(self) -> None:
        """Until the client has taken enough of what was written."""

    def cut(self) -> None:
        """End the connection now: an answer already begun cannot be finished."""

    def done(self, cycle: Cycle) -> None:
        """This cycle's answer is out: the connection goes on with the next request."""


class Cycle:
    """One request: what it asks (`operation`, `route`, `call`), or the `refusal` it is answered with,
    and how far its answer has got."""

    __slots__ = (
        "_answer",
        "_conn",
        "_exchange",
        "_head_sent",
        "_hop",
        "_sent",
        "_service",
        "_task",
        "call",
        "finished",
        "held",
        "keep_alive",
        "operation",
        "refusal",
        "rid",
        "route",
        "timeline",
    )

    def __init__(
        self,
        conn: Connection,
        service: Service | None,
        rid: bytes,
        operation: Operation | None,
        route: Route | None,
        call: Invocation | None,
        refusal: GatewayError | None,
        *,
        keep_alive: bool,
        held: int = 0,
        timeline: Timeline | None = None,
        answer: Callable[[bytes, bool], Awaitable[bytes]] | None = None,
    ) -> None:
        self._conn = conn
        # a whole answer the server works out (the control plane's, the local SageMaker's /metrics)
        self._answer = answer
        self._service = service
        self.rid = rid
        self.operation = operation
        self.route = route
        self.call = call
        self.refusal = refusal
        self.keep_alive = keep_alive
        self.held = held  # bytes of body the server's BodyBudget counts until the cycle is done
        self.timeline = timeline  # kept when telemetry is on
        self.finished = False
        self._hop = 0
        self._sent: Invocation | None = None
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._head_sent = False

    @property
    def service(self) -> Service | None:
        """The endpoint variant the request reached (None for the control plane and refusals)."""
        return self._service

    # the steps
    def start(self) -> None:
        if self.refusal is not None:
            self._fail(self.refusal)
        elif self.operation is Operation.INVOKE or self.operation is Operation.STREAM:
            assert self.route is not None and self.call is not None
            self._send(0, DataPlane.entry(self.route, self.call))
        elif self._answer is not None:
            self._wait(self._answer_whole)
        elif self.operation is Operation.METRICS:
            assert self._service is not None
            metrics = self._service.telemetry.metrics
            if metrics is None:
                self._fail(UnknownOperation("Metrics are off (mce serve --no-metrics)."))
                return
            self._conn.write(
                wire.text_response(
                    200, metrics.exposition(), wire.PROMETHEUS, self.rid, close=not self.keep_alive
                )
            )
            self._finish()
        else:
            self._wait(self._ping)

    def _send(self, hop: int, sent: Invocation) -> None:
        route = self.route
        assert route is not None
        self._hop, self._sent = hop, sent
        if self.timeline is not None:
            self.timeline.sent(hop)
        begin = route.begins[hop]
        if begin is not None:
            # a stream is handed over with its first bytes; anything else once whole (or large)
            self._exchange = begin(sent, self, 0 if sent.stream else wire.WHOLE)
            if self._exchange is not None:
                return  # reply() or error() follows
        self._wait(self._invoke, hop, sent)

    # Receiver: how an exchange started with `begin` ends; `_invoke` ends the same way
    def reply(self, reply: Reply) -> None:
        self._exchange = None
        route, hop = self.route, self._hop
        assert route is not None
        if hop < route.last:  # an inner container of a pipeline answered: its answer is the next request
            if reply.complete:
                self._hand_on(reply, b"".join(reply.take()))
            else:
                self._wait(self._read_hop, reply)
        elif self.operation is Operation.STREAM:
            self._wait(self._stream_events, reply)
        elif reply.complete:
            if self.timeline is not None:
                self.timeline.answered(hop)
            chunks = reply.take()
            self._write_whole(reply, chunks, sum(map(len, chunks)))
            self._finish()
        else:
            self._wait(self._stream, reply)

    def error(self, error: ModelError) -> None:
        self._exchange = None
        self._fail(error)

    def _hand_on(self, reply: Reply, body: bytes) -> None:
        route, call, sent, hop = self.route, self.call, self._sent, self._hop
        assert route is not None and call is not None and sent is not None
        if self.timeline is not None:
            self.timeline.answered(hop)
        self._send(hop + 1, DataPlane.hand_on(route, hop, call, sent, reply, body))

    # steps that wait, each run as the cycle's task by _wait
    async def _invoke(self, hop: int, sent: Invocation) -> None:
        assert self.route is not None
        self.reply(await self.route.backends[hop].invoke(sent))

    async def _read_hop(self, reply: Reply) -> None:
        assert self.route is not None
        hop = self._hop
        self._hand_on(reply, await read_hop(reply, self.route.names[hop], self.route.names[hop + 1]))

    async def _ping(self) -> None:
        assert self._service is not None
        health = await self._service.dataplane.health()
        self._conn.write(
            wire.json_response(
                200 if health.ready else 503, health.document(), self.rid, close=not self.keep_alive
            )
        )
        self._finish()

    async def _answer_whole(self) -> None:
        assert self._answer is not None
        self._conn.write(await self._answer(self.rid, not self.keep_alive))
        self._finish()

    async def _stream(self, reply: Reply) -> None:
        """The last container's 2xx answer: whole if it completes within wire.WHOLE, else relayed as
        it arrives (Content-Length passed on, or re-chunked), at the pace the client takes it."""
        conn = self._conn
        try:
            chunks = reply.take()
            size = sum(map(len, chunks))
            while not reply.complete and size < wire.WHOLE:
                await reply.wait()
                more = reply.take()
                chunks += more
                size += sum(map(len, more))
            if reply.complete:
                if self.timeline is not None:
                    self.timeline.answered(self._hop)
                self._write_whole(reply, chunks, size)
            else:
                length = reply.content_length
                conn.write(self._head(reply, length))
                self._head_sent = True
                chunked = length is None
                _write_body(conn, chunks, chunked)
                while not reply.complete:
                    await conn.drained()
                    await reply.wait()
                    _write_body(conn, reply.take(), chunked)
                _write_body(conn, reply.take(), chunked)
                if chunked:
                    conn.write(wire.LAST_CHUNK)
                if self.timeline is not None:  # a streamed answer takes the container until its last byte
                    self.timeline.answered(self._hop)
        finally:
            if not reply.complete:
                reply.abandon()
        self._finish()

    async def _stream_events(self, reply: Reply) -> None:
        """InvokeEndpointWithResponseStream: the last container's answer as PayloadPart events, each as
        soon as its bytes arrive, at the pace the client takes them (the container's connection stops
        being read while the client lags: gateway.upstream). A failure once the answer has begun is a
        ModelStreamError event, which boto3 raises while iterating; the answer itself ends cleanly."""
        conn = self._conn
        conn.write(self._head(reply, None, stream=True))
        self._head_sent = True
        try:
            while True:
                chunks = reply.take()
                if chunks:
                    conn.write(wire.chunk(eventstream.payload_part(b"".join(chunks))))
                if reply.complete:
                    break
                await conn.drained()
                await reply.wait()
        except ModelError as error:
            self._stream_failed(error)
        finally:
            if not reply.complete:
                reply.abandon()
        if self.timeline is not None and not self.timeline.failure:
            self.timeline.answered(self._hop)
        conn.write(wire.LAST_CHUNK)
        self._finish()

    def _stream_failed(self, error: ModelError) -> None:
        if self.timeline is not None:
            self.timeline.failed(error)
        logger.info("request %s: stream broken: %s", self.rid.decode(), error.message)
        code = eventstream.TIMEOUT if error.timed_out else eventstream.STREAM_BROKEN
        self._conn.write(wire.chunk(eventstream.model_stream_error(error.message, code)))

    def _wait(self, step: Callable[P, Awaitable[None]], *args: P.args, **kwargs: P.kwargs) -> None:
        """Run `step` as the cycle's task. The coroutine is made inside the task, so a task cancelled
        before it starts leaves nothing unawaited."""
        self._task = asyncio.get_running_loop().create_task(self._guarded(step, *args, **kwargs))

    async def _guarded(self, step: Callable[P, Awaitable[None]], *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await step(*args, **kwargs)
        except GatewayError as error:
            self._fail(error)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("request %s failed inside the gateway", self.rid.decode())
            self._fail(InternalFailure("The gateway failed while handling the request."))

    # the end
    def _fail(self, error: GatewayError) -> None:
        if self.finished:
            return
        if isinstance(error, ModelError) and self._service is not None:
            self._service.locate(error)
        if self.timeline is not None:
            self.timeline.failed(error)
        logger.info("request %s: %s: %s", self.rid.decode(), error.code, error.message)
        if self._head_sent and self.operation is Operation.STREAM:
            # an event stream can still say so: boto3 raises it while the client iterates
            self._conn.write(
                wire.chunk(eventstream.exception("InternalStreamFailure", {"Message": error.message}))
            )
            self._conn.write(wire.LAST_CHUNK)
        elif self._head_sent:
            # The answer is already on its way; the only honest signal left is to cut it short.
            self._conn.cut()
        else:
            close = not self.keep_alive
            if self.operation is Operation.CONTROL:  # AWS JSON 1.1: botocore reads the code from __type
                self._conn.write(wire.control_error(error, self.rid, close=close))
            else:
                self._conn.write(wire.error_response(error, self.rid, close=close))
        self._finish()

    def _finish(self) -> None:
        self.finished = True
        self._task = None
        if self.timeline is not None and self._service is not None:
            self._service.telemetry.finish(self)
        self._conn.done(self)

    def abandon(self) -> None:
        """The client has gone: stop waiting on the containers and free what the cycle holds."""
        if self.finished:
            return
        self.finished = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._exchange is not None:
            self._exchange.abandon()
            self._exchange = None

    # writing the answer
    def _write_whole(self, reply: Reply, chunks: list[bytes], size: int) -> None:
        """A whole answer in one write: head and body together."""
        self._conn.write(b"".join([self._head(reply, size), *chunks]))

    def _head(self, reply: Reply, length: int | None, *, stream: bool = False) -> bytes:
        """The answer's head: `length` None for a chunked body; `stream` for an event stream (which has
        no session members: InvokeEndpointWithResponseStream cannot open a session)."""
        assert self._service is not None
        return wire.invocation_head(
            self._service.ok_head,
            self.rid,
            reply.content_type,
            reply.custom_attributes,
            length=length,
            close=not self.keep_alive,
            timing=self._timing(),
            session=b"" if stream else reply.session_headers,
            stream=stream,
        )

    def _timing(self) -> bytes | None:
        if self.timeline is None or self.route is None or self._service is None:
            return None
        return self._service.telemetry.server_timing(self.route, self.timeline)


def _write_body(conn: Connection, chunks: list[bytes], chunked: bool) -> None:
    for piece in chunks:
        conn.write(wire.chunk(piece) if chunked else piece)
