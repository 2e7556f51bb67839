"""The data plane: an endpoint's containers, its router, the pipeline rules, and the containers' health.

Shared by every front door, which only translates (kserve's shape); the request cycle (gateway.cycle)
walks a route with these rules. A Direct route is one hop; a Serial route reads each intermediate answer
whole (capped at 5 MB, spec §3, `read_hop`) and hands it on as the next request (`hand_on`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.backends import Backend, BodyTooLarge, Reply, build_backend
from gateway.endpoint import ContainerMode, Endpoint
from gateway.errors import ModelError
from gateway.invocation import Invocation
from gateway.routing import Route, Router

MAX_HOP_PAYLOAD = 5 * 1024 * 1024  # between two containers of a pipeline (spec §3)


@dataclass(frozen=True, slots=True)
class Health:
    """Each container's readiness: None when ready, else why not."""

    containers: dict[str, str | None]

    @property
    def ready(self) -> bool:
        return all(reason is None for reason in self.containers.values())

    def document(self) -> dict[str, object]:
        return {
            "status": "Healthy" if self.ready else "Unhealthy",
            "containers": {
                name: {"status": "Healthy"} if reason is None else {"status": "Unhealthy", "reason": reason}
                for name, reason in self.containers.items()
            },
        }


class DataPlane:
    """The endpoint's containers, its router, and the two things a front door asks of them."""

    def __init__(self, endpoint: Endpoint, backends: Sequence[Backend]) -> None:
        self.endpoint = endpoint
        self.backends = tuple(backends)
        self.router = Router(endpoint, self.backends)
        self._health_round: asyncio.Future[Health] | None = None

    @classmethod
    def from_endpoint(
        cls, endpoint: Endpoint, *, base: Path | None = None, model_cache: Path | None = None
    ) -> DataPlane:
        """`base`: the endpoint document's folder; `model_cache`: where MultiModel containers' models are
        unpacked, a folder per container (both default to the current folder's)."""
        base = base or Path.cwd()
        cache = model_cache or Path("run") / endpoint.EndpointName / "models"
        backends: list[Backend] = []
        for index, container in enumerate(endpoint.containers):
            name = endpoint.hostname(index)
            if container.Mode is ContainerMode.MULTI_MODEL:
                from gateway.multimodel.backend import MultiModelBackend

                backends.append(MultiModelBackend(name, container, base=base, cache=(cache / name).resolve()))
            else:
                backends.append(build_backend(name, container.Backend))
        return cls(endpoint, backends)

    async def start(self) -> None:
        for backend in self.backends:
            await backend.start()

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()

    @staticmethod
    def entry(route: Route, call: Invocation) -> Invocation:
        """What the first container is sent. SageMaker does not document what an inner container of a
        pipeline gets; the client's Accept is for the pipeline's answer, so only the last one gets it
        (and streams it, for InvokeEndpointWithResponseStream)."""
        if route.last == 0:
            return call
        return replace(call, accept=None, stream=False)

    @staticmethod
    def hand_on(
        route: Route, index: int, call: Invocation, sent: Invocation, reply: Reply, body: bytes
    ) -> Invocation:
        """What container `index + 1` is sent: container `index`'s answer and its Content-Type
        (docs/decisions.md D5)."""
        last = index + 1 == route.last
        return replace(
            sent,
            body=body,
            content_type=reply.content_type,
            accept=call.accept if last else None,
            # custom attributes travel along: a container may replace them for the next one
            custom_attributes=reply.custom_attributes
            if reply.custom_attributes is not None
            else sent.custom_attributes,
            stream=call.stream and last,  # only the last container's answer streams
        )

    async def health(self) -> Health:
        """Every container's readiness, checked now; concurrent callers share one round of checks."""
        if self._health_round is None:
            self._health_round = asyncio.ensure_future(self._check_all())
            self._health_round.add_done_callback(self._end_round)
        return await asyncio.shield(self._health_round)

    async def _check_all(self) -> Health:
        reasons = await asyncio.gather(*(backend.check_health() for backend in self.backends))
        return Health({backend.name: reason for backend, reason in zip(self.backends, reasons, strict=True)})

    def _end_round(self, _: asyncio.Future[Health]) -> None:
        self._health_round = None


async def read_hop(reply: Reply, source: str, target: str) -> bytes:
    """An intermediate answer, whole; over 5 MB is a ModelError naming both containers (spec §3)."""
    declared = reply.content_length
    if declared is not None and declared > MAX_HOP_PAYLOAD:
        reply.abandon()
        raise _hop_too_large(source, target, f"{declared} bytes")
    try:
        return await reply.read(MAX_HOP_PAYLOAD)
    except BodyTooLarge:
        raise _hop_too_large(source, target, f"more than {MAX_HOP_PAYLOAD} bytes") from None


def _hop_too_large(source: str, target: str, size: str) -> ModelError:
    # SageMaker's wording for this case (spec §3).
    return ModelError(
        f"Received response from {source} with status code 200. However, the request payload from "
        f"{source} to {target} is {size}, which has exceeded the maximum limit of 5 MB.",
        container=source,
    )
