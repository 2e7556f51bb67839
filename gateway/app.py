"""The composition root: one gateway process, built from one `Options`, for `mce serve` and `mce up` alike.

    Gateway(options)
      .add(endpoint, base=..., model_cache=...)   its data plane (containers, router) and telemetry: a Service
      .listen()                                    the front door (gateway.server), every endpoint on one port
      .remove(name)                                an endpoint leaves; the others keep serving
      .close()                                     stop accepting, let answers finish, drop every endpoint

Endpoints can be added and removed while the front door serves: it finds a request's endpoint by its path
(`/endpoints/{name}/invocations`), once per request. The CLI (gateway.cli) only parses arguments, calls
these, and chooses exit codes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.dataplane import DataPlane
from gateway.endpoint import Endpoint, ExecutionMode
from gateway.limits import Limits
from gateway.metrics import Metrics
from gateway.multimodel.backend import MultiModelBackend
from gateway.server import Server
from gateway.service import Service
from gateway.telemetry import Telemetry
from gateway.wire import VARIANT_NAME

if TYPE_CHECKING:
    from gateway.access import Access

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: the OS chooses
    metrics: bool = True  # /metrics and Server-Timing
    access_log: bool = False  # one JSON line per invocation
    access: Access | None = None  # SigV4 and policies (gateway.access); None: off
    limits: Limits = field(default_factory=Limits)
    shutdown_grace: float = 30.0  # seconds answers in progress may take to finish on close()


class Gateway:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.services: dict[str, Service] = {}
        self.server: Server | None = None

    async def add(self, endpoint: Endpoint, *, base: Path, model_cache: Path | None = None) -> Service:
        """Start serving `endpoint` (`base`: its document's folder, for relative paths)."""
        if endpoint.EndpointName in self.services:
            raise ValueError(f"endpoint {endpoint.EndpointName} is served already")
        dataplane = DataPlane.from_endpoint(endpoint, base=base, model_cache=model_cache)
        await dataplane.start()
        service = Service(dataplane, self._telemetry(dataplane))
        self.services[endpoint.EndpointName] = service
        if self.server is not None:
            self.server.mount(service)
        return service

    async def remove(self, name: str) -> None:
        """Stop serving endpoint `name`: new requests to it are refused; its containers' connections close."""
        service = self.services.pop(name)
        if self.server is not None:
            self.server.unmount(service)
        await service.dataplane.close()

    async def listen(self) -> tuple[str, int]:
        """Open the front door; the bound address. OSError if it cannot listen."""
        options = self.options
        server = Server(host=options.host, port=options.port, access=options.access, limits=options.limits)
        for service in self.services.values():
            server.mount(service)
        address = await server.start()
        self.server = server
        return address

    async def close(self) -> None:
        if self.server is not None:
            logger.info("stopping: finishing answers in progress (up to %.0f s)", self.options.shutdown_grace)
            await self.server.shutdown(self.options.shutdown_grace)
        for name in list(self.services):
            await self.remove(name)

    def _telemetry(self, dataplane: DataPlane) -> Telemetry:
        endpoint = dataplane.endpoint
        names = [endpoint.hostname(i) for i in range(len(endpoint.containers))]
        metrics = None
        if self.options.metrics:
            single_hop = endpoint.mode is ExecutionMode.DIRECT or len(names) == 1
            metrics = Metrics(endpoint.EndpointName, VARIANT_NAME, names, single_hop=single_hop)
            for backend in dataplane.backends:
                if isinstance(backend, MultiModelBackend):
                    metrics.models[backend.name] = backend.store.stats
            access = self.options.access
            if access is not None:
                denials = access.denials
                metrics.denials = lambda: _by_reason(denials)
        return Telemetry(metrics, names, log_requests=self.options.access_log)


def _by_reason(denials: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (_, reason), count in denials.items():
        totals[reason] = totals.get(reason, 0) + count
    return totals
