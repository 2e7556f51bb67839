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

Route = tuple[Backend, ...]


class Operation(Enum):
    INVOKE = "invoke"
    PING = "ping"
    METRICS = "metrics"


class Router:
    """Maps a request to its operation and, for invocations, to the containers it runs through."""

    def __init__(self, endpoint: Endpoint, backends: Sequence[Backend]) -> None:
        self.endpoint_name = endpoint.EndpointName
        self.mode = endpoint.mode
        self._invoke_path = f"/endpoints/{endpoint.EndpointName}/invocations".encode()
        self._direct: dict[bytes, Route] = {}
        if self.mode is ExecutionMode.DIRECT:
            self._direct = {backend.name.encode(): (backend,) for backend in backends}
        self._serial: Route = tuple(backends)
        self._names = ", ".join(backend.name for backend in backends)
        routes = [*self._direct.values(), self._serial]
        # which routes reach a MultiModel container (spec §4): they need TargetModel, the others refuse it
        modes = {backend.name: container.Mode for backend, container in zip(backends, endpoint.containers)}
        self._multi_model = {
            route: any(modes[b.name] is ContainerMode.MULTI_MODEL for b in route) for route in routes
        }
        self.names: dict[Route, tuple[str, ...]] = {route: tuple(b.name for b in route) for route in routes}
        # each container's Server-Timing entry up to its duration (gateway.telemetry)
        self.timing: dict[Route, tuple[bytes, ...]] = {
            route: tuple(b'container;desc="%s";dur=' % b.name.encode() for b in route) for route in routes
        }

    def operation(self, method: bytes, url: bytes) -> Operation:
        """The operation a request line names; raises for anything the runtime API does not have."""
        path = url.split(b"?", 1)[0]
        if path == self._invoke_path or path == b"/invocations":
            if method == b"POST":
                return Operation.INVOKE
        elif path == b"/ping":
            if method == b"GET":
                return Operation.PING
        elif path == b"/metrics":
            if method == b"GET":
                return Operation.METRICS
        elif path.startswith(b"/endpoints/") and path.endswith(b"/invocations"):
            raise self._unknown_endpoint(path[len(b"/endpoints/") : -len(b"/invocations")])
        raise UnknownOperation(
            f"mce-gateway serves POST /endpoints/{self.endpoint_name}/invocations, POST /invocations, "
            f"GET /ping and GET /metrics; not {method.decode('ascii', 'replace')} {_text(path)}."
        )

    def route(self, target: bytes | None, target_model: bytes | None = None) -> Route:
        """The containers an invocation runs through, from `X-Amzn-SageMaker-Target-Container-Hostname`;
        `X-Amzn-SageMaker-Target-Model` must name a model exactly when the route has a MultiModel container."""
        if self.mode is ExecutionMode.DIRECT:
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
        if self._multi_model[route] != (target_model is not None):
            raise self._target_model_mismatch(route, target_model)
        return route

    def _target_model_mismatch(self, route: Route, target_model: bytes | None) -> GatewayError:
        where = f"container {route[0].name} of endpoint" if self.mode is ExecutionMode.DIRECT else "endpoint"
        if target_model is None:
            return ValidationError(
                f"The {where} {self.endpoint_name} hosts multiple models: the request is missing a target "
                "model header (TargetModel)."
            )
        # SageMaker's wording and error code for TargetModel to a single-model endpoint (spec §1.3)
        return ValidationError(
            f"The {where} {self.endpoint_name} is not a multi-model endpoint and does not support target model header.",
            error_code="TARGET_MODEL_HEADER_NOT_SUPPORTED",
        )

    def _bad_target(self, target: bytes | None) -> GatewayError:
        if target is None:
            return ValidationError(
                f"Endpoint {self.endpoint_name} is in Direct mode: name the container with "
                f"TargetContainerHostname (one of: {self._names})."
            )
        text = _text(target)
        if len(target) > wire.MAX_HOSTNAME or not target.isascii() or not HOSTNAME_RE.fullmatch(text):
            return ValidationError(
                f"TargetContainerHostname '{text}' does not match {HOSTNAME_PATTERN} "
                f"(at most {wire.MAX_HOSTNAME} characters)."
            )
        return ValidationError(
            f"TargetContainerHostname '{text}' is not a container of endpoint {self.endpoint_name} "
            f"(its containers: {self._names})."
        )

    def _unknown_endpoint(self, name: bytes) -> GatewayError:
        text = _text(name)
        if len(name) > 63 or not name.isascii() or not ENDPOINT_NAME_RE.fullmatch(text):
            return ValidationError(
                f"EndpointName '{text}' does not match {ENDPOINT_NAME_PATTERN} (at most 63 characters)."
            )
        # SageMaker's wording for an endpoint that does not exist (spec §1.3).
        return ValidationError(f"Endpoint {text} of account {wire.LOCAL_ACCOUNT} not found.")


def _text(value: bytes) -> str:
    return value[:100].decode("utf-8", "replace")

