"""SageMaker's front door: what a request is, decided once from its head, and the cycle that answers it.

The HTTP server (gateway.server) parses, and asks the front door twice per request:

    admit(method, url, headers, length, client)   when the head is complete: the endpoint, its variant, the
                                                  operation, the route and the invocation, or the refusal;
                                                  as a `Cycle` (gateway.cycle) that answers through the
                                                  client's runtime or control-plane responder
    complete(cycle, method, url, headers, body)   when the body is in: who signed it (--access), the
                                                  control plane's or /metrics' answer, the async queue

Both read the one frozen view of the head: what routes a request is what authorizes it. The front door owns
what is mounted (each endpoint's variants, `gateway.service.Variants`), the asynchronous queues, the local
SageMaker's own paths (`POST /`, `GET /metrics`) and the request ids; it never sees a socket, so it can be
driven in-process (tests/test_frontdoor.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Final, Protocol

from gateway import console, wire
from gateway.async_inference import MAX_INLINE_BODY, AsyncConfig, AsyncQueue, Journal, accepted, job_from
from gateway.backends.http import HttpAddress
from gateway.cycle import Cycle, Responder, Tee
from gateway.errors import GatewayError, RequestRefused, UnknownOperation, ValidationError
from gateway.invocation import Invocation, check_component, invocation_from
from gateway.metrics import Metrics, containers_exposition
from gateway.origins import Origins
from gateway.routing import Operation, unknown_endpoint
from gateway.service import Service, Shifting, Variants
from gateway.timeline import Timeline

if TYPE_CHECKING:
    from gateway.access import Access, Key
    from gateway.backends import Reply

logger = logging.getLogger(__name__)


class Control(Protocol):
    """The control plane, as the front door sees it (gateway.control): `POST /` is its."""

    async def call(
        self, target: bytes | None, body: bytes, authorize: Callable[[str, str], None] | None
    ) -> bytes:
        """The AWS JSON 1.1 answer to one request with this X-Amz-Target, or a GatewayError (a ControlError,
        framed by the control-plane responder); `authorize(action, resource ARN)` raises unless the caller
        may (None: access is off)."""

    def absent(self, name: str) -> GatewayError | None:
        """Why endpoint `name`, not mounted, cannot be invoked (Creating, Failed), if it exists."""

    def containers(self, name: str) -> list[dict[str, object]] | None:
        """Each running container of endpoint `name` (its variant, state and last lines of output), for
        the console; None when there is no such endpoint."""


class Client(Protocol):
    """Who sent a request, as the front door sees it: where its answers go, in each framing."""

    @property
    def runtime(self) -> Responder:
        """The runtime API's framing (errors in SageMaker's shape)."""

    @property
    def control(self) -> Responder:
        """The control plane's framing (AWS JSON 1.1, errors with `__type`)."""


INVOCATIONS: Final = (Operation.INVOKE, Operation.STREAM)  # a route and a container's answer
BODIED: Final = (*INVOCATIONS, Operation.ASYNC)  # a body, counted against the server's budget
# answered by the front door, not a container
ANSWERED_HERE: Final = (Operation.CONTROL, Operation.METRICS, Operation.ASYNC, Operation.CONSOLE)
ACTIONS = {  # the IAM action --access authorizes for each (gateway.access)
    Operation.INVOKE: "sagemaker:InvokeEndpoint",
    Operation.STREAM: "sagemaker:InvokeEndpoint",  # InvokeEndpointWithResponseStream's, as documented
    Operation.ASYNC: "sagemaker:InvokeEndpointAsync",
}
# a byte's value, not b"?": `in` then looks for one byte, where a bytes needle costs a search set-up
_QUERY: Final = ord("?")
DESCRIBE = "sagemaker:DescribeEndpoint"  # what a key needs to see an endpoint's metrics
CONTROL_TYPE = b"application/x-amz-json-1.1"  # what every AWS SDK sends to a JSON 1.1 service


class Shadowing:
    """Where shadow variants' answers go: nowhere. It keeps the copies running, so a variant being
    retired waits for them and a closing front door stops them."""

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running: set[Cycle] = set()

    def whole(self, cycle: Cycle, reply: Reply, chunks: list[bytes], size: int) -> None:
        pass

    def start(self, cycle: Cycle, reply: Reply, length: int | None) -> None:
        pass

    def body(self, chunks: list[bytes]) -> None:
        pass

    def end(self) -> None:
        pass

    def document(
        self, cycle: Cycle, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        pass

    def fail(self, cycle: Cycle, error: GatewayError, begun: bool) -> None:
        pass  # counted in the shadow variant's metrics, logged by the cycle; no client hears of it

    async def drained(self) -> None:
        pass

    def done(self, cycle: Cycle) -> None:
        self.running.discard(cycle)

    def abandon(self) -> None:
        for cycle in list(self.running):
            cycle.abandon()
        self.running.clear()


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


class FrontDoor:
    """Every endpoint on one port: `mount` makes an endpoint reachable, `admit` and `complete` turn each
    request into its cycle."""

    def __init__(
        self,
        *,
        origins: Origins,
        access: Access | None = None,
        control: Control | None = None,
        metrics: bool = True,
        journal: Journal | None = None,
    ) -> None:
        """`control`: the local SageMaker's control plane (mce up), which also brings GET /metrics over every
        endpoint (`metrics`); `journal`: where accepted asynchronous requests are written down (None: in
        memory only)."""
        self.origins = origins
        self.access = access
        self.control = control
        self.metrics = metrics
        self.journal = journal
        self.request_ids = wire.RequestIds()
        self._by_name: dict[bytes, Variants] = {}  # endpoint name -> its variants
        self._only: Variants | None = None  # the one endpoint, while there is one: /invocations is its
        self._queues: dict[str, AsyncQueue] = {}  # endpoint name -> its InvokeEndpointAsync queue
        self._closing_queues: set[asyncio.Task[None]] = set()
        # production variant -> its shadow variant and the share copied; the copies being answered
        self._shadows: dict[Service, tuple[Service, float]] = {}
        self._shadowing = Shadowing()

    # what is mounted
    def mount(
        self,
        name: str,
        variants: list[tuple[Service, float]],
        asynchronous: AsyncConfig | None = None,
        components: dict[str, Service] | None = None,
        shadow: tuple[Service, float] | None = None,
        previous: tuple[list[tuple[Service, float]], float] | None = None,
    ) -> None:
        """Serve endpoint `name` at `/endpoints/{name}/invocations` from these variants (and at
        `/invocations`, `/ping` and `/metrics` while it is the only endpoint); with `asynchronous`, also
        InvokeEndpointAsync, from a queue that outlives a remount (an update) of the endpoint; with
        `shadow`, a copy of that share of its invocations goes to that service too (a shadow variant);
        with `previous` (the old fleet's variants, the share the new one gets), an update's traffic shift."""
        mounted = self._by_name[name.encode()] = (
            Shifting(variants, Variants(previous[0]), previous[1], components, shadow)
            if previous is not None
            else Variants(variants, components, shadow)
        )
        self._find_shadows()
        self._only = next(iter(self._by_name.values())) if len(self._by_name) == 1 else None
        queue = self._queues.get(name)
        if asynchronous is None:
            if queue is not None:
                self._close_queue(name, gone=True)
        elif queue is None or queue.config != asynchronous:
            handed = queue.hand_over() if queue is not None else []  # each keeps the locations it was told
            if queue is not None:
                self._close_queue(name)
            self._queues[name] = AsyncQueue(
                name, asynchronous, mounted, self._async_cycle, self.journal, handed
            )
        else:
            queue.variants = mounted
        for (
            service,
            _,
        ) in variants:  # the queue's depth and age are reported with the endpoint's first variant
            metrics = service.telemetry.metrics
            if metrics is not None:
                metrics.queue = self._queues.get(name) if service is variants[0][0] else None

    def unmount(self, name: str) -> None:
        self._by_name.pop(name.encode(), None)
        self._find_shadows()
        self._only = next(iter(self._by_name.values())) if len(self._by_name) == 1 else None
        if name in self._queues:
            self._close_queue(name, gone=True)

    def names(self) -> list[str]:
        """The endpoints mounted now."""
        return [name.decode() for name in self._by_name]

    def queue(self, name: str) -> AsyncQueue | None:
        """Endpoint `name`'s asynchronous queue, if it is configured for InvokeEndpointAsync."""
        return self._queues.get(name)

    def answering(self, services: Collection[Service]) -> bool:
        """Whether an asynchronous request, or a shadow variant's copy, is running on one of `services`."""
        return any(queue.answering(services) for queue in self._queues.values()) or any(
            cycle.service in services for cycle in self._shadowing.running
        )

    def bidirectional(self, endpoint: str, variant: bytes | None) -> tuple[Service, str, str]:
        """Where InvokeEndpointWithBidirectionalStream goes (gateway.bidi): the variant that answers, its
        container's name and host:port. Its one container must be reached over HTTP (a WebSocket)."""
        variants = self._by_name.get(endpoint.encode())
        if variants is None:
            raise self._not_served(endpoint.encode())
        service = variants.pick(variant)
        backends = service.dataplane.backends
        if len(backends) != 1:
            raise ValidationError(
                f"Endpoint {endpoint} has {len(backends)} containers: a bidirectional stream goes to an "
                "endpoint (or inference component) of one container."
            )
        server = getattr(backends[0], "server", None)
        if not isinstance(server, HttpAddress):
            raise ValidationError(
                f"Endpoint {endpoint}'s container is not reached over HTTP: it cannot take a WebSocket."
            )
        return service, backends[0].name, server.address

    def _find_shadows(self) -> None:
        self._shadows = {
            service: variants.shadow
            for variants in self._by_name.values()
            if variants.shadow is not None
            for service in variants.services
        }

    async def close(self) -> None:
        """Stop the asynchronous queues (with a journal, what is unanswered runs after a restart) and the
        shadow copies still running."""
        self._shadowing.abandon()
        for name in list(self._queues):
            self._close_queue(name)
        await asyncio.gather(*self._closing_queues, return_exceptions=True)
        if self.journal is not None:
            self.journal.close()

    def _close_queue(self, name: str, *, gone: bool = False) -> None:
        """`gone`: the endpoint takes no asynchronous requests any more; those not answered fail."""
        closing = asyncio.get_running_loop().create_task(self._queues.pop(name).close(gone=gone))
        self._closing_queues.add(closing)
        closing.add_done_callback(self._closing_queues.discard)

    @staticmethod
    def _async_cycle(responder: Responder, service: Service, rid: bytes, call: Invocation) -> Cycle:
        """The cycle an asynchronous request runs as, answered into `responder` (its spool); raises
        GatewayError when the variant has no route for it (an update may have replaced its containers)."""
        route = service.dataplane.router.route(None, None)
        timeline = Timeline() if service.telemetry.enabled else None
        return Cycle(responder, service, rid, Operation.INVOKE, route, call, timeline=timeline)

    # what a request is
    def admit(
        self, method: bytes, url: bytes, headers: dict[bytes, bytes], length: int | None, client: Client
    ) -> Cycle:
        """The cycle a request becomes, from its head; `length`: its Content-Length, if it has one. A
        refusal is the cycle's `refusal`; one that ends the connection (`closes`) is answered before the
        body is read."""
        path = url if _QUERY not in url else url.partition(b"?")[0]
        control = self.control
        foreign = self.origins.refusal(headers.get(b"host"), headers.get(b"origin"))
        if foreign is not None:  # before anything else: nothing done for a page that is no client
            framed = control is not None and path == b"/" and method == b"POST"
            return self.refused(foreign, client, control=framed, closes=True)
        if control is not None and (path == b"/" or path == b"/metrics" or path.startswith(console.PREFIX)):
            return self._admit_local(method, path, headers, length, client)
        service: Service | None = None
        operation: Operation | None = None
        try:
            component = headers.get(wire.INFERENCE_COMPONENT)
            if component is not None:
                check_component(component)
            service = self._service_for(path, headers.get(wire.TARGET_VARIANT), component)
            router = service.dataplane.router
            operation = router.operation(method, path)
            if operation is Operation.ASYNC:
                self._check_async(service, length)
            if operation in BODIED and length is not None and length > wire.MAX_BODY:
                return self.refused(body_too_large(length), client, service=service, closes=True)
            if operation is Operation.INVOKE or operation is Operation.STREAM:
                call = invocation_from(headers, stream=operation is Operation.STREAM)
                route = router.route(headers.get(wire.TARGET_CONTAINER), call.target_model)
                timeline = Timeline() if service.telemetry.enabled else None
                rid = self.request_ids.next()
                responder = client.runtime
                capture = service.capture
                if capture is not None and capture.sampled():  # its answer is kept as it passes
                    responder = Tee(responder, partial(capture.add, call), capture.config.outputs)
                return Cycle(responder, service, rid, operation, route, call, timeline=timeline)
        except GatewayError as error:
            return self.refused(error, client, service=service, operation=operation)
        return Cycle(client.runtime, service, self.request_ids.next(), operation)

    def _admit_local(
        self, method: bytes, path: bytes, headers: dict[bytes, bytes], length: int | None, client: Client
    ) -> Cycle:
        """The local SageMaker's own paths: the control plane at POST /, every endpoint's metrics at
        GET /metrics."""
        if path == b"/" and method == b"POST":
            try:
                check_control_type(headers.get(b"content-type"))
            except GatewayError as error:
                return self.refused(error, client, control=True)
            if length is not None and length > wire.MAX_BODY:
                return self.refused(body_too_large(length), client, control=True, closes=True)
            return Cycle(client.control, None, self.request_ids.next(), Operation.CONTROL)
        if method == b"GET" and (path == b"/" or path.startswith(console.PREFIX)):
            if self.access is not None:
                return self.refused(console.OFF_UNDER_ACCESS, client, operation=Operation.CONSOLE)
            return Cycle(client.runtime, None, self.request_ids.next(), Operation.CONSOLE)
        if path == b"/metrics" and method == b"GET":
            if not self.metrics:
                return self.refused(UnknownOperation("Metrics are off (mce up --no-metrics)."), client)
            return Cycle(client.runtime, None, self.request_ids.next(), Operation.METRICS)
        return self.refused(
            UnknownOperation(
                "The local SageMaker answers POST / (the control plane, with X-Amz-Target), GET / (its "
                "console), GET /metrics and POST /endpoints/{EndpointName}/invocations; not "
                f"{method.decode('ascii', 'replace')} {wire.shown(path)}."
            ),
            client,
        )

    def refused(
        self,
        error: GatewayError,
        client: Client,
        *,
        service: Service | None = None,
        operation: Operation | None = None,
        control: bool = False,
        closes: bool = False,
    ) -> Cycle:
        """A request answered with `error` (in the control plane's shape when `control`); `closes`: the
        connection ends with it, its body unread."""
        responder = client.control if control else client.runtime
        # an invocation refused once its endpoint is known is one of the endpoint's 4XX/5XX invocations
        counted = (
            not closes and service is not None and service.telemetry.enabled and operation in INVOCATIONS
        )
        cycle = Cycle(
            responder,
            service,
            self.request_ids.next(),
            Operation.CONTROL if control else operation,
            refusal=error,
            timeline=Timeline() if counted else None,
        )
        cycle.closes = closes
        return cycle

    def _service_for(self, path: bytes, target_variant: bytes | None, component: bytes | None) -> Service:
        """The variant of the endpoint a request path names (the only endpoint, for the paths that name
        none) that answers it."""
        name = wire.endpoint_name(path)
        # a path that names an endpoint gets that one or none: never another (access authorizes the name)
        variants = self._by_name.get(name) if name is not None else self._only
        if variants is None:
            if name is not None:
                raise self._not_served(name)
            raise UnknownOperation(
                "No endpoint is served here."
                if not self._by_name
                else f"Served here: POST /endpoints/{{EndpointName}}/invocations (and "
                f"/invocations-response-stream, /async-invocations); not {wire.shown(path)}."
            )
        return variants.pick(target_variant, component)

    def _not_served(self, name: bytes) -> GatewayError:
        """Why endpoint `name` answers nothing: the control plane knows it (Creating, Failed...), or there
        is no such endpoint."""
        absent = self.control.absent(name.decode("latin-1")) if self.control is not None else None
        return absent if absent is not None else unknown_endpoint(name)

    def _check_async(self, service: Service, length: int | None) -> None:
        """InvokeEndpointAsync needs an endpoint configured for it, reached with no hostname or model,
        and an inline Body of at most 128,000 bytes."""
        endpoint = service.dataplane.router.endpoint_name
        if endpoint not in self._queues:
            raise ValidationError(
                f"Endpoint {endpoint} is not configured for asynchronous inference: its endpoint "
                "configuration has no AsyncInferenceConfig."
            )
        service.dataplane.router.route(
            None, None
        )  # a Direct or multi-model endpoint has no route without a header
        if length is not None and length > MAX_INLINE_BODY:
            raise ValidationError(
                f"An inline Body is at most {MAX_INLINE_BODY} bytes; larger input goes in InputLocation."
            )

    # the body is in
    def complete(
        self,
        cycle: Cycle,
        method: bytes,
        url: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        *,
        authenticate: bool = True,
    ) -> None:
        """Make `cycle` ready to start, now that its body is in: who signed it comes before what is wrong
        with it (no container names to strangers), then what answers the local SageMaker's paths and
        InvokeEndpointAsync. `authenticate`: False for a request shed for want of room (its body was not
        kept)."""
        operation = cycle.operation
        call = cycle.call
        if call is not None:
            call.body = body
            if call.traceparent is None:  # a fresh trace, named after the request
                call.traceparent = self.request_ids.traceparent(cycle.rid)
        access = self.access
        key: Key | None = None
        # the console under --access is only ever refused (console.OFF_UNDER_ACCESS): it says so to anyone
        if (
            access is not None
            and authenticate
            and operation is not Operation.PING
            and operation is not Operation.CONSOLE
        ):
            try:
                endpoint, action = self._authorized(cycle, url)
                key = access.check(method, url, headers, body, endpoint, action=action)
            except GatewayError as error:
                cycle.refusal = error
        if cycle.refusal is None:
            if operation in ANSWERED_HERE:
                self._answer(cycle, url, headers, body, key)
            elif self._shadows and call is not None:
                self._shadow(cycle, headers, call)

    def _shadow(self, cycle: Cycle, headers: dict[bytes, bytes], call: Invocation) -> None:
        """Send a copy of an invocation to its variant's shadow variant, when the share says so: routed by
        the same headers, with the same trace and InferenceId, its answer read whole and dropped (its
        metrics and data capture are the shadow variant's). A copy that cannot be routed is not sent."""
        found = self._shadows.get(cycle.service) if cycle.service is not None else None
        if found is None:
            return
        service, share = found
        if share < 1.0 and random.random() >= share:
            return
        try:
            route = service.dataplane.router.route(headers.get(wire.TARGET_CONTAINER), call.target_model)
        except GatewayError as error:
            logger.info(
                "request %s: no copy to shadow variant %s: %s",
                cycle.rid.decode(),
                service.variant,
                error.message,
            )
            return
        copy = replace(call, stream=False)
        responder: Responder = self._shadowing
        capture = service.capture
        if capture is not None and capture.sampled():
            responder = Tee(responder, partial(capture.add, copy), capture.config.outputs)
        timeline = Timeline() if service.telemetry.enabled else None
        shadowed = Cycle(
            responder, service, self.request_ids.next(), Operation.INVOKE, route, copy, timeline=timeline
        )
        self._shadowing.running.add(shadowed)
        shadowed.start()

    def _authorized(self, cycle: Cycle, url: bytes) -> tuple[str, str | None]:
        """The endpoint and the IAM action --access authorizes this request for (None: a signature by any
        key will do). A path naming an endpoint that does not serve (Creating, Failed, or no such
        endpoint) is authorized as its invocation all the same, before it is refused: a key learns
        nothing of an endpoint it may not invoke (gateway.access)."""
        operation = cycle.operation
        service = cycle.service
        if service is not None:
            endpoint = service.dataplane.router.endpoint_name
            if operation is Operation.METRICS:  # one endpoint's metrics: what describing it shows
                return endpoint, DESCRIBE
        else:
            path = url.partition(b"?")[0]
            named = wire.endpoint_name(path)
            if named is None:
                return "", None
            endpoint = named.decode("latin-1")
            if operation is None:
                asynchronous = path.endswith(b"/async-invocations")
                return endpoint, ACTIONS[Operation.ASYNC if asynchronous else Operation.INVOKE]
        return endpoint, ACTIONS.get(operation) if operation is not None else None

    def _answer(
        self, cycle: Cycle, url: bytes, headers: dict[bytes, bytes], body: bytes, key: Key | None
    ) -> None:
        """What answers a request that no container's answer does: the control plane, /metrics over every
        endpoint, the console, an InvokeEndpointAsync's 202. `key`: who signed it, when --access is on."""
        operation = cycle.operation
        control = self.control
        if operation is Operation.CONTROL and control is not None:
            access = self.access
            authorize = partial(access.authorize, key) if access is not None and key is not None else None
            target = headers.get(b"x-amz-target")

            async def control_answer(cycle: Cycle) -> None:
                answer = await control.call(target, body, authorize)
                cycle.responder.document(cycle, 200, wire.AWS_JSON_TYPE, answer)

            cycle.answer_with(control_answer)
        elif operation is Operation.METRICS and cycle.service is None:
            cycle.answer_with(partial(self._metrics_answer, key))
        elif operation is Operation.CONSOLE and control is not None:
            try:
                status, content_type, document = console.answer(url, control)
            except GatewayError as error:
                cycle.refusal = error
                return

            async def page(cycle: Cycle) -> None:
                cycle.responder.document(cycle, status, content_type, document, console.HEADERS)

            cycle.answer_with(page)
        elif operation is Operation.ASYNC and cycle.service is not None:
            queue = self._queues[cycle.service.dataplane.router.endpoint_name]
            try:
                job = job_from(headers, body, queue.config)
                queue.submit(job)
            except GatewayError as error:
                cycle.refusal = error
                return
            document, extra = accepted(job)

            async def accept(cycle: Cycle) -> None:
                cycle.responder.document(cycle, 202, wire.JSON_TYPE, document, extra)

            cycle.answer_with(accept)

    async def _metrics_answer(self, key: Key | None, cycle: Cycle) -> None:
        """GET /metrics of the local SageMaker: every mounted variant's (while an update drains the old
        ones, both have the same labels); under --access, of the endpoints the key may describe."""
        access = self.access

        def shown(name: str) -> bool:
            return access is None or key is None or access.allows(key, DESCRIBE, access.resource(name))

        every = [
            service.telemetry.metrics
            for name, variants in list(self._by_name.items())
            if shown(name.decode("latin-1"))
            for service in variants.every
            if service.telemetry.metrics is not None
        ]
        exposition = Metrics.merged(every) + await containers_exposition(every)
        cycle.responder.document(cycle, 200, wire.PROMETHEUS, exposition)
