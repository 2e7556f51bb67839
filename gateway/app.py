"""The composition root: one gateway process, built from one `Options`, for `mce serve` and `mce up` alike.

    Gateway(options)
      .add(endpoint, base=..., variant=...)     its data plane (containers, router) and telemetry: a Service
      .mount(name, [(service, weight), ...])    requests to endpoint `name` reach these services (variants)
      .unmount(name)                            ... and no longer; in-flight answers finish
      .drop(service)                            a service's connections close (after unmount)
      .listen()                                 the HTTP server (gateway.server) before the front door
                                                (gateway.frontdoor): every endpoint on one port
      .close()                                  stop accepting, let answers finish, drop every service

Endpoints can be added, mounted and dropped while the front door serves: it finds a request's endpoint by
its path (`/endpoints/{name}/invocations`), once per request, and the endpoint's variant by
`X-Amzn-SageMaker-Target-Variant` or by weight. With a control plane (gateway.control, `mce up`), the
same port answers SageMaker's API at `POST /`. The CLI (gateway.cli) only parses arguments, calls these,
and chooses exit codes.

    LocalSageMaker.build(options, state, ...)  mce up: the gateway, the endpoints the control plane runs
                                               (gateway.control.endpoints) and the control plane answered
                                               at POST / (gateway.control.api), wired to one another
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.async_inference import AsyncConfig, Journal
from gateway.backends.http import HttpAddress
from gateway.capture import Capture
from gateway.control.api import ControlPlane
from gateway.control.endpoints import Endpoints
from gateway.control.images import ImageMap
from gateway.control.state import State
from gateway.dataplane import DataPlane
from gateway.endpoint import Endpoint, ExecutionMode
from gateway.frontdoor import FrontDoor
from gateway.launch.console import Console
from gateway.limits import Limits
from gateway.metrics import CONTAINER_METRICS_LIMIT, Metrics
from gateway.multimodel.backend import MultiModelBackend
from gateway.origins import Origins
from gateway.server import Server
from gateway.serverless import IDLE_SECONDS, Serverless
from gateway.service import Logs, Service
from gateway.telemetry import Telemetry
from gateway.wire import LOCAL_ACCOUNT, VARIANT_NAME

if TYPE_CHECKING:
    from gateway.access import Access
    from gateway.frontdoor import Control
    from gateway.workers import Siblings

logger = logging.getLogger(__name__)

DRAIN_POLL = 0.05  # seconds between looks at whether a replaced variant still answers requests


@dataclass(frozen=True)
class Options:
    region: str = "us-east-1"  # in ARNs (LogStreamArn, the control plane's)
    account: str = LOCAL_ACCOUNT
    host: str = "127.0.0.1"
    port: int = 8080  # 0: the OS chooses
    allow_hosts: tuple[str, ...] = ()  # Host names answered besides loopback's and `host` (gateway.origins)
    metrics: bool = True  # /metrics and Server-Timing
    access_log: bool = False  # one JSON line per invocation
    access: Access | None = None  # SigV4 and policies (gateway.access); None: off
    limits: Limits = field(default_factory=Limits)
    shutdown_grace: float = 30.0  # seconds answers in progress may take to finish on close()
    async_journal: Path | None = None  # where accepted InvokeEndpointAsync requests are kept (None: memory)
    siblings: Siblings | None = None  # one of mce serve --workers' processes: these are the others


class Gateway:
    def __init__(self, options: Options, control: Control | None = None) -> None:
        """Made inside the event loop. The front door (`server`) exists from the start and holds the one
        record of what is mounted; `listen` opens it."""
        self.options = options
        self.services: list[Service] = []
        self.door = FrontDoor(
            origins=Origins(options.host, options.allow_hosts),
            access=options.access,
            control=control,
            metrics=options.metrics,
            journal=Journal(options.async_journal) if options.async_journal is not None else None,
        )
        self.server = Server(
            self.door,
            host=options.host,
            port=options.port,
            limits=options.limits,
            reuse_port=options.siblings is not None,
        )

    @property
    def control(self) -> Control | None:
        """The control plane's request handler, answered at POST / (gateway.control)."""
        return self.door.control

    @control.setter
    def control(self, control: Control | None) -> None:
        self.door.control = control

    async def add(
        self,
        endpoint: Endpoint,
        *,
        base: Path,
        model_cache: Path | None = None,
        variant: str = VARIANT_NAME,
        component: str | None = None,
        capture: Capture | None = None,
        serverless: Serverless | None = None,
    ) -> Service:
        """Start `endpoint`'s data plane (`base`: its document's folder, for relative paths); not yet
        reachable: `mount` makes it so. `component`: an inference component's, whose metrics carry its
        name as their `variant` label (the components of one variant are told apart so); `capture`: the
        variant's data capture; `serverless`: a serverless variant's capacity."""
        dataplane = DataPlane.from_endpoint(endpoint, base=base, model_cache=model_cache)
        await dataplane.start()
        logs = Logs(self.options.region, self.options.account, endpoint.EndpointName, variant)
        telemetry = self._telemetry(dataplane, component or variant)
        service = Service(dataplane, telemetry, variant, logs, capture, serverless)
        self.services.append(service)
        return service

    def mount(
        self,
        name: str,
        variants: list[tuple[Service, float]],
        asynchronous: AsyncConfig | None = None,
        components: dict[str, Service] | None = None,
        shadow: tuple[Service, float] | None = None,
        previous: tuple[list[tuple[Service, float]], float] | None = None,
    ) -> None:
        """Requests to endpoint `name` go to these services from now on, each variant by its weight;
        `asynchronous`: it also takes InvokeEndpointAsync (gateway.async_inference); `components`: it is
        made for inference components, and these answer it, by name; `shadow`: a shadow variant, sent a
        copy of that share of the requests; `previous`: during an update's traffic shift, the old fleet's
        variants and the share of requests the new one gets."""
        self.door.mount(name, variants, asynchronous, components, shadow, previous)

    def unmount(self, name: str) -> None:
        self.door.unmount(name)

    async def drained(self, services: list[Service], timeout: float) -> bool:
        """Until no request that reached `services` (no longer mounted) is being answered; False if some
        still are after `timeout` seconds. Polled every DRAIN_POLL: nothing on the request path counts."""
        server = self.server
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while server.answering(services):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL)
        return True

    async def drop(self, service: Service) -> None:
        """Close a service's connections to its containers; it must no longer be mounted."""
        if service in self.services:
            self.services.remove(service)
        await service.dataplane.close()

    async def listen(self) -> tuple[str, int]:
        """Open the front door (and, for one of several workers, its metrics to the others); the bound
        address. OSError if it cannot listen."""
        siblings = self.options.siblings
        if siblings is not None:  # mce serve: one endpoint, one variant
            own = [service.telemetry.metrics for service in self.services if service.telemetry.metrics]
            await siblings.serve(own[0].exposition if own else bytes)
        return await self.server.start()

    async def close(self) -> None:
        logger.info("stopping: finishing answers in progress (up to %.0f s)", self.options.shutdown_grace)
        await self.server.shutdown(self.options.shutdown_grace)
        if self.options.siblings is not None:
            await self.options.siblings.close()
        for name in self.door.names():
            self.unmount(name)
        for service in list(self.services):
            await self.drop(service)

    def _telemetry(self, dataplane: DataPlane, variant: str) -> Telemetry:
        endpoint = dataplane.endpoint
        names = [endpoint.hostname(i) for i in range(len(endpoint.containers))]
        metrics = None
        if self.options.metrics:
            single_hop = endpoint.mode is ExecutionMode.DIRECT or len(names) == 1
            metrics = Metrics(endpoint.EndpointName, variant, names, single_hop=single_hop)
            for i, backend in enumerate(dataplane.backends):
                if isinstance(backend, MultiModelBackend):
                    metrics.models[backend.name] = backend.store.stats
                config = endpoint.containers[i].ContainerMetricsConfig
                server = getattr(backend, "server", None)
                if config is not None and isinstance(server, HttpAddress):  # scraped over HTTP only
                    path = config.path.encode()
                    metrics.scrapers[backend.name] = partial(server.fetch, path, CONTAINER_METRICS_LIMIT)
            access = self.options.access
            if access is not None:
                denials = access.denials
                metrics.denials = lambda: _by_reason(denials)
            if self.options.siblings is not None:
                metrics.siblings = self.options.siblings.gather
        return Telemetry(metrics, names, log_requests=self.options.access_log)


@dataclass(frozen=True)
class LocalSageMaker:
    """`mce up`: one gateway whose front door also answers SageMaker's control plane, which runs endpoints
    on it. The three need one another (the control plane creates endpoints, the endpoints are mounted on
    the gateway, the gateway hands the control plane its requests), so they are made here, together."""

    gateway: Gateway
    endpoints: Endpoints
    control: ControlPlane

    @classmethod
    def build(
        cls,
        options: Options,
        state: State,
        images: ImageMap,
        state_dir: Path,
        console: Console,
        *,
        startup_timeout: float,
        describe_hold: float,
        serverless_idle: float = IDLE_SECONDS,
        data_roots: Sequence[Path] = (),
    ) -> LocalSageMaker:
        """Made inside the event loop; accepted asynchronous requests are kept in `state_dir` (D37)."""
        gateway = Gateway(replace(options, async_journal=state_dir / "async.db"))
        endpoints = Endpoints(
            gateway,
            state,
            images,
            state_dir,
            console,
            startup_timeout=startup_timeout,
            describe_hold=describe_hold,
            serverless_idle=serverless_idle,
        )
        control = ControlPlane(
            state, endpoints, region=options.region, account=options.account, data_roots=data_roots
        )
        gateway.control = control
        return cls(gateway, endpoints, control)


def _by_reason(denials: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (_, reason), count in denials.items():
        totals[reason] = totals.get(reason, 0) + count
    return totals
