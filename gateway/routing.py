"""Where a request is routed: which containers serve it, decided from the path and one header.

The route table is built once from the endpoint: in Direct mode a dict from hostname bytes to a one-hop
route, in Serial mode the one pipeline. Per request the lookup is one dict access; the slower checks that
word a precise error run only when the lookup fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from gateway import wire
from gateway.backends import Backend
from gateway.backends.base import Begin, CanBegin
from gateway.endpoint import (
    ENDPOINT_NAME_PATTERN,
    ENDPOINT_NAME_RE,
    HOSTNAME_PATTERN,
    HOSTNAME_RE,
    ContainerMode,
    Endpoint,
    ExecutionMode,
)
from gateway.errors import GatewayError, UnknownOperation, ValidationError


class Route:
    """The containers one invocation runs through, in order, with what the request cycle needs of them:
    their names, and for each the `begin` that starts an exchange without a task, where it has one
    (learned once, here)."""

    __slots__ = ("backends", "begins", "last", "multi_model", "names")

    def __init__(self, backends: Sequence[Backend], *, multi_model: bool) -> None:
        self.backends = tuple(backends)
        self.names = tuple(backend.name for backend in backends)
        self.begins: tuple[Begin | None, ...] = tuple(
            backend.begin if isinstance(backend, CanBegin) else None for backend in backends
        )
        self.last = len(backends) - 1
        self.multi_model = multi_model  # it reaches a MultiModel container: TargetModel is required (spec §4)

    def __repr__(self) -> str:
        return f"Route({' -> '.join(self.names)})"


class Operation(Enum):
    INVOKE = "invoke"
    STREAM = "stream"  # InvokeEndpointWithResponseStream: the last container's answer as events
    ASYNC = "async"  # InvokeEndpointAsync: queued, run in the background (gateway.async_inference)
    PING = "ping"
    METRICS = "metrics"
    CONTROL = "control"  # SageMaker's control-plane API, POST / (gateway.control)
    CONSOLE = "console"  # the local SageMaker's page for a browser, GET / and /console/* (gateway.console)


class Router:
    """Maps a request to its operation and, for invocations, to the containers it runs through."""

    def __init__(self, endpoint: Endpoint, backends: Sequence[Backend]) -> None:
        self.endpoint_name = endpoint.EndpointName
        self.mode = endpoint.mode
        self._is_direct = self.mode is ExecutionMode.DIRECT  # read per request; the enum is looked up by name
        self._invoke_path = f"/endpoints/{endpoint.EndpointName}/invocations".encode()
        self._stream_path = self._invoke_path + b"-response-stream"
        self._async_path = f"/endpoints/{endpoint.EndpointName}/async-invocations".encode()
        multi_model = {
            backend.name: container.Mode is ContainerMode.MULTI_MODEL
            for backend, container in zip(backends, endpoint.containers, strict=True)
        }
        self._direct: dict[bytes, Route] = {}
        if self.mode is ExecutionMode.DIRECT:
            self._direct = {
                backend.name.encode(): Route((backend,), multi_model=multi_model[backend.name])
                for backend in backends
            }
        self._serial = Route(backends, multi_model=any(multi_model.values()))
        self._names = ", ".join(backend.name for backend in backends)
        self.routes: tuple[Route, ...] = (*self._direct.values(), self._serial)

    def operation(self, method: bytes, path: bytes) -> Operation:
        """The operation a request's method and path (its target less any query) name; raises for anything
        the runtime API does not have."""
        if path == self._invoke_path or path == b"/invocations":
            if method == b"POST":
                return Operation.INVOKE
        elif path == self._stream_path:
            if method == b"POST":
                return Operation.STREAM
        elif path == self._async_path:
            if method == b"POST":
                return Operation.ASYNC
        elif path == b"/ping":
            if method == b"GET":
                return Operation.PING
        elif path == b"/metrics":
            if method == b"GET":
                return Operation.METRICS
        elif (name := wire.endpoint_name(path)) is not None:
            raise unknown_endpoint(name)
        raise UnknownOperation(
            f"mce-gateway serves POST /endpoints/{self.endpoint_name}/invocations (and "
            "/invocations-response-stream, /async-invocations), POST /invocations, GET /ping and GET "
            "/metrics; not "
            f"{method.decode('ascii', 'replace')} {wire.shown(path)}."
        )

    def route(self, target: bytes | None, target_model: bytes | None = None) -> Route:
        """The containers an invocation runs through, from `X-Amzn-SageMaker-Target-Container-Hostname`;
        `X-Amzn-SageMaker-Target-Model` must name a model exactly when the route has a MultiModel
        container."""
        if self._is_direct:
            route = self._direct.get(target) if target is not None else None
            if route is None:
                raise self._bad_target(target)
        elif target is not None:
            raise ValidationError(
                f"Endpoint {self.endpoint_name} runs its containers in Serial mode; "
                "TargetContainerHostname is only for endpoints in Direct mode."
            )
        else:
            route = self._serial
        if route.multi_model != (target_model is not None):
            raise self._target_model_mismatch(route, target_model)
        return route

    def _target_model_mismatch(self, route: Route, target_model: bytes | None) -> GatewayError:
        where = f"container {route.names[0]} of endpoint" if self.mode is ExecutionMode.DIRECT else "endpoint"
        if target_model is None:
            return ValidationError(
                f"The {where} {self.endpoint_name} hosts multiple models: the request is missing a target "
                "model header (TargetModel)."
            )
        # SageMaker's wording and error code for TargetModel to a single-model endpoint (spec §1.3)
        return ValidationError(
            f"The {where} {self.endpoint_name} is not a multi-model endpoint and does not support target "
            "model header.",
            error_code="TARGET_MODEL_HEADER_NOT_SUPPORTED",
        )

    def _bad_target(self, target: bytes | None) -> GatewayError:
        if target is None:
            return ValidationError(
                f"Endpoint {self.endpoint_name} is in Direct mode: name the container with "
                f"TargetContainerHostname (one of: {self._names})."
            )
        text = wire.shown(target)
        if len(target) > wire.MAX_HOSTNAME or not target.isascii() or not HOSTNAME_RE.fullmatch(text):
            return ValidationError(
                f"TargetContainerHostname '{text}' does not match {HOSTNAME_PATTERN} "
                f"(at most {wire.MAX_HOSTNAME} characters)."
            )
        return ValidationError(
            f"TargetContainerHostname '{text}' is not a container of endpoint {self.endpoint_name} "
            f"(its containers: {self._names})."
        )


def unknown_endpoint(name: bytes) -> GatewayError:
    """The error for `/endpoints/{name}/invocations` when no endpoint of that name is served."""
    text = wire.shown(name)
    if len(name) > 63 or not name.isascii() or not ENDPOINT_NAME_RE.fullmatch(text):
        return ValidationError(
            f"EndpointName '{text}' does not match {ENDPOINT_NAME_PATTERN} (at most 63 characters)."
        )
    # SageMaker's wording for an endpoint that does not exist (spec §1.3).
    return ValidationError(f"Endpoint {text} of account {wire.LOCAL_ACCOUNT} not found.")
