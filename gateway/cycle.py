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

A cycle never frames bytes: it tells its `Responder` what the answer is (start, body, end; whole; a
document the gateway made; a failure), and the responder frames it for whoever asked: HTTP for the runtime
API and AWS JSON for the control plane (gateway.server), a spooled object for an asynchronous request
(gateway.async_inference). Which cycle a request becomes is the front door's decision (gateway.frontdoor);
what each container of a pipeline is sent is the data plane's rule (`DataPlane.entry`, `DataPlane.hand_on`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, Protocol

from gateway import wire
from gateway.backends import Reply
from gateway.backends.base import Exchange
from gateway.dataplane import DataPlane, read_hop
from gateway.errors import GatewayError, InternalFailure, ModelError, UnknownOperation
from gateway.invocation import Invocation
from gateway.routing import Operation, Route
from gateway.timeline import Timeline

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.serverless import Serverless
    from gateway.service import Service

logger = logging.getLogger(__name__)


P = ParamSpec("P")


class Responder(Protocol):
    """Where a cycle's answer goes, framed for whoever asked. One answer at a time: `whole`, or `start`,
    `body`... and `end`; or `document`; or `fail`, at any point. Then `done`."""

    def whole(self, cycle: Cycle, reply: Reply, chunks: list[bytes], size: int) -> None:
        """A container's whole answer, `size` bytes in `chunks` (start, body and end in one)."""

    def start(self, cycle: Cycle, reply: Reply, length: int | None) -> None:
        """A container's answer begins: its head (`length` None: not known yet)."""

    def body(self, chunks: list[bytes]) -> None:
        """More of the answer begun."""

    def end(self) -> None:
        """The answer begun is complete."""

    def document(
        self, cycle: Cycle, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        """A whole answer the gateway made (/ping's, /metrics', the control plane's, a 202); `extra`:
        header lines."""

    def fail(self, cycle: Cycle, error: GatewayError, begun: bool) -> None:
        """The request failed with `error`; `begun`: after `start` (a stream can still say so in-band;
        anything else can only be cut short)."""

    async def drained(self) -> None:
        """Until whoever asked has taken enough of what was sent."""

    def done(self, cycle: Cycle) -> None:
        """This cycle's answer is out."""


class Tee:
    """A responder that also hands the answer, once it is out, to `listener` (content type and body; the
    body None when `keep` is False or it passed wire.MAX_BODY bytes). Only answers a container made:
    failures and documents pass through unheard. Used by data capture (gateway.capture)."""

    __slots__ = ("_inner", "_kept", "_listener", "_size", "_type")

    def __init__(
        self, inner: Responder, listener: Callable[[bytes | None, bytes | None], None], keep: bool
    ) -> None:
        self._inner = inner
        self._listener = listener
        self._type: bytes | None = None
        self._kept: list[bytes] | None = [] if keep else None
        self._size = 0

    def whole(self, cycle: Cycle, reply: Reply, chunks: list[bytes], size: int) -> None:
        self._inner.whole(cycle, reply, chunks, size)
        self._listener(reply.content_type, b"".join(chunks) if self._kept is not None else None)

    def start(self, cycle: Cycle, reply: Reply, length: int | None) -> None:
        self._type = reply.content_type
        self._inner.start(cycle, reply, length)

    def body(self, chunks: list[bytes]) -> None:
        kept = self._kept
        if kept is not None:
            self._size += sum(map(len, chunks))
            if self._size <= wire.MAX_BODY:
                kept += chunks
            else:
                self._kept = None
        self._inner.body(chunks)

    def end(self) -> None:
        self._inner.end()
        kept = self._kept
        self._listener(self._type, b"".join(kept) if kept is not None else None)

    def document(
        self, cycle: Cycle, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        self._inner.document(cycle, status, content_type, body, extra)

    def fail(self, cycle: Cycle, error: GatewayError, begun: bool) -> None:
        self._inner.fail(cycle, error, begun)

    async def drained(self) -> None:
        await self._inner.drained()

    def done(self, cycle: Cycle) -> None:
        self._inner.done(cycle)


class Cycle:
    """One request: what it asks (`operation`, `route`, `call`), or the `refusal` it is answered with,
    and how far its answer has got."""

    __slots__ = (
        "_admitted",
        "_answer",
        "_exchange",
        "_head_sent",
        "_hop",
        "_sent",
        "_service",
        "_task",
        "call",
        "closes",
        "finished",
        "held",
        "keep_alive",
        "operation",
        "refusal",
        "responder",
        "rid",
        "route",
        "timeline",
    )

    def __init__(
        self,
        responder: Responder,
        service: Service | None,
        rid: bytes,
        operation: Operation | None,
        route: Route | None = None,
        call: Invocation | None = None,
        refusal: GatewayError | None = None,
        *,
        keep_alive: bool = True,
        timeline: Timeline | None = None,
    ) -> None:
        self.responder = responder
        # a whole answer the front door works out (the control plane's, /metrics, a 202)
        self._answer: Callable[[Cycle], Awaitable[None]] | None = None
        self._service = service
        self.rid = rid
        self.operation = operation
        self.route = route
        self.call = call
        self.refusal = refusal
        self.closes = False  # the refusal ends the connection: nothing after it is read
        self.keep_alive = keep_alive
        self.held = 0  # bytes of body the server's BodyBudget counts until the cycle is done
        self.timeline = timeline  # kept when telemetry is on
        self.finished = False
        self._hop = 0
        self._sent: Invocation | None = None
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._head_sent = False
        self._admitted: Serverless | None = None  # counted in a serverless variant's concurrency

    def answer_with(self, answer: Callable[[Cycle], Awaitable[None]]) -> None:
        """The cycle is answered by `answer`, which tells the responder (a document or a failure)."""
        self._answer = answer

    @property
    def service(self) -> Service | None:
        """The endpoint variant the request reached (None for the control plane and refusals)."""
        return self._service

    # the steps
    def start(self) -> None:
        if self.refusal is not None:
            self._fail(self.refusal)
        elif self.operation is Operation.INVOKE or self.operation is Operation.STREAM:
            assert self.route is not None and self.call is not None and self._service is not None
            serverless = self._service.serverless
            if serverless is not None:
                self._start_serverless(serverless)
                return
            self._send(0, DataPlane.entry(self.route, self.call))
        elif self._answer is not None:
            self._wait(self._answer_whole)
        elif self.operation is Operation.METRICS:
            assert self._service is not None
            metrics = self._service.telemetry.metrics
            if metrics is None:
                self._fail(UnknownOperation("Metrics are off (mce serve --no-metrics)."))
                return
            self._wait(self._scrape, metrics)
        else:
            self._wait(self._ping)

    def _start_serverless(self, serverless: Serverless) -> None:
        """A serverless variant's invocation: refused past its MaxConcurrency; sent once its containers
        run (a cold start first, when they do not)."""
        refusal = serverless.admit()
        if refusal is not None:
            self._fail(refusal)
            return
        self._admitted = serverless
        if serverless.warm:
            assert self.route is not None and self.call is not None
            self._send(0, DataPlane.entry(self.route, self.call))
        else:
            self._wait(self._cold_start, serverless)

    async def _cold_start(self, serverless: Serverless) -> None:
        await serverless.ready()
        assert self.route is not None and self.call is not None
        self._send(0, DataPlane.entry(self.route, self.call))

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
            size = 0
            for chunk in chunks:  # compiled, a loop; sum(map(len, ...)) looks three builtins up by name
                size += len(chunk)
            self.responder.whole(self, reply, chunks, size)
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
        body = json.dumps(health.document()).encode()
        self.responder.document(self, 200 if health.ready else 503, wire.JSON_TYPE, body)
        self._finish()

    async def _scrape(self, metrics: Metrics) -> None:
        self.responder.document(self, 200, wire.PROMETHEUS, await metrics.scrape())
        self._finish()

    async def _answer_whole(self) -> None:
        assert self._answer is not None
        await self._answer(self)
        self._finish()

    async def _stream(self, reply: Reply) -> None:
        """The last container's 2xx answer: whole if it completes within wire.WHOLE, else relayed as
        it arrives (Content-Length passed on, or re-chunked), at the pace the client takes it."""
        responder = self.responder
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
                responder.whole(self, reply, chunks, size)
            else:
                responder.start(self, reply, reply.content_length)
                self._head_sent = True
                responder.body(chunks)
                while not reply.complete:
                    await responder.drained()
                    await reply.wait()
                    responder.body(reply.take())
                responder.body(reply.take())
                responder.end()
                if self.timeline is not None:  # a streamed answer takes the container until its last byte
                    self.timeline.answered(self._hop)
        finally:
            if not reply.complete:
                reply.abandon()
        self._finish()

    async def _stream_events(self, reply: Reply) -> None:
        """InvokeEndpointWithResponseStream: the last container's answer as it arrives, each piece as soon
        as its bytes do (the responder makes them PayloadPart events), at the pace the client takes them
        (the container's connection stops being read while the client lags: gateway.upstream). A failure
        once the answer has begun is told in-band (a ModelStreamError event, which boto3 raises while
        iterating)."""
        responder = self.responder
        responder.start(self, reply, None)
        self._head_sent = True
        try:
            while True:
                chunks = reply.take()
                if chunks:
                    responder.body(chunks)
                if reply.complete:
                    break
                await responder.drained()
                await reply.wait()
        except ModelError as error:
            if self.timeline is not None:
                self.timeline.failed(error)
            logger.info("request %s: stream broken: %s", self.rid.decode(), error.message)
            responder.fail(self, error, True)
            self._finish()
            return
        finally:
            if not reply.complete:
                reply.abandon()
        if self.timeline is not None:
            self.timeline.answered(self._hop)
        responder.end()
        self._finish()

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
        self.responder.fail(self, error, self._head_sent)
        self._finish()

    def _finish(self) -> None:
        self.finished = True
        self._task = None
        if self._admitted is not None:
            self._admitted.release()
            self._admitted = None
        timeline = self.timeline
        if timeline is not None and self._service is not None:
            call = self.call
            self._service.telemetry.finish(
                self.rid,
                self.route.names if self.route is not None else (),
                timeline,
                call.inference_id if call is not None else None,
            )
        self.responder.done(self)

    def abandon(self) -> None:
        """The client has gone: stop waiting on the containers and free what the cycle holds."""
        if self.finished:
            return
        self.finished = True
        if self._admitted is not None:
            self._admitted.release()
            self._admitted = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._exchange is not None:
            self._exchange.abandon()
            self._exchange = None

    def timing(self) -> bytes | None:
        """The answer's `Server-Timing` so far, when telemetry is on."""
        if self.timeline is None or self.route is None or self._service is None:
            return None
        return self._service.telemetry.server_timing(self.route, self.timeline)
