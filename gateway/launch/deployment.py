"""One endpoint (or one variant of one) launched: its containers started as SageMaker would, and its
service in the gateway. `mce up DOC` and the control plane's CreateEndpoint both go through here.

    deployment = Deployment(gateway, endpoint, base=..., run_dir=..., console=...)
    await deployment.start(startup_timeout)   plan, start every container, wait until all are healthy
    deployment.serve()                        from now on: restart containers that exit, echo their output
    await deployment.stop()                   the containers stop, the service's connections close

Mounting the service on the front door (which requests reach it) is the caller's: `Gateway.mount`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

from gateway.capture import Capture
from gateway.endpoint import Endpoint
from gateway.launch.console import Console
from gateway.launch.modeldata import Limits
from gateway.launch.plan import fetch, inside, plan
from gateway.launch.process import STOP_GRACE, Registry, group_usage
from gateway.launch.supervisor import Supervisor
from gateway.multimodel.backend import MultiModelBackend
from gateway.serverless import IDLE_SECONDS, Serverless, ServerlessConfig
from gateway.service import Service
from gateway.wire import VARIANT_NAME

LOG_NAMES = "_logs"  # under the state folder: the containers' logs by SageMaker's names for them
PROCESSES = "_processes"  # under the state folder: the running containers' process groups (Registry)
DEPLOYMENT_LOG = "deployment.log"  # in a deployment's run folder: its steps, one line each


class Host(Protocol):
    """Where a deployment's service runs: the gateway process (gateway.app.Gateway)."""

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
        """Start `endpoint`'s data plane; not yet reachable (mounting it is the caller's)."""

    async def drop(self, service: Service) -> None:
        """Close a service's connections to its containers; it is no longer mounted."""


class Deployment:
    def __init__(
        self,
        gateway: Host,
        endpoint: Endpoint,
        *,
        base: Path,
        run_dir: Path,
        console: Console,
        variant: str = VARIANT_NAME,
        model_cache: Path | None = None,
        taken_ports: set[int] | None = None,
        planning: asyncio.Lock | None = None,
        logs: Path | None = None,
        component: str | None = None,
        limits: Limits | None = None,
        capture: Capture | None = None,
        serverless: ServerlessConfig | None = None,
        idle: float = IDLE_SECONDS,
    ) -> None:
        """`base`: where relative paths of the endpoint are from; `taken_ports`: ports other deployments
        hold (this one's are added to it, and given back on stop); `planning`: held while this deployment
        plans, when others may plan at the same time (they would choose the same free ports); `logs`:
        where each container's log is also found under SageMaker's name for it (LOG_NAMES, below); `limits`:
        what its model data may take (a production variant's download timeout and volume size); `capture`:
        the variant's data capture, whose last events are written when the deployment stops; `serverless`:
        a serverless variant's configuration, whose containers stop after `idle` seconds without an
        invocation and start again with the next (gateway.serverless)."""
        self.gateway = gateway
        self.endpoint = endpoint
        self.base = base
        self.run_dir = run_dir
        self.console = console
        self.variant = variant
        self.model_cache = model_cache or run_dir / "models"
        self.taken_ports = taken_ports if taken_ports is not None else set()
        self._planning = planning
        self._logs = logs
        self.component = component  # an inference component's deployment: its name
        self.limits = limits or Limits()
        self.capture = capture
        self.serverless = (
            Serverless(
                serverless,
                f"{endpoint.EndpointName}/{variant}",
                wake=self._wake,
                sleep=self._sleep,
                idle=idle,
            )
            if serverless is not None
            else None
        )
        self._startup_timeout = 0.0
        self._ports: set[int] = set()
        self._service: Service | None = None
        self._supervisor: Supervisor | None = None

    @property
    def service(self) -> Service:
        assert self._service is not None, "start() first"
        return self._service

    async def start(self, startup_timeout: float) -> None:
        """Plan, start and wait for every container. LaunchError (naming the container, with its last
        lines) if one cannot start or never gets healthy; nothing is left running then."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # model data is downloaded and unpacked first: in a thread, so other endpoints keep serving, and
        # before the planning lock, so no other endpoint's start waits on this one's download
        say = self._progress(asyncio.get_running_loop())
        fetched = await asyncio.to_thread(fetch, self.endpoint, self.base, self.run_dir, self.limits, say)
        async with self._planning or contextlib.nullcontext():
            served, plans = await asyncio.to_thread(
                plan,
                self.endpoint,
                self.base,
                self.run_dir,
                taken_ports=self.taken_ports,
                model_cache=self.model_cache,
                fetched=fetched,
            )
            for planned in plans:
                self._ports.update(range(planned.ports.bind, planned.ports.last + 1))
            self.taken_ports |= self._ports
        self.endpoint = served
        service = self._service = await self.gateway.add(
            served,
            base=self.base,
            model_cache=self.model_cache,
            variant=self.variant,
            component=self.component,
            capture=self.capture,
            serverless=self.serverless,
        )
        backends = {backend.name: backend for backend in service.dataplane.backends}
        registry = Registry(self._logs / PROCESSES) if self._logs is not None else None
        supervisor = self._supervisor = Supervisor(plans, backends, self.console, registry)
        began = time.monotonic()
        self._record(f"starting {', '.join(c.name for c in supervisor.containers) or 'no container'}")
        try:
            await supervisor.start(startup_timeout)
            self._name_logs(service, supervisor)
        except BaseException as exc:
            self._record(f"failed to start: {exc}")
            await self.stop()
            raise
        self._record(f"every container healthy in {time.monotonic() - began:.1f} s")
        self._startup_timeout = startup_timeout
        metrics = service.telemetry.metrics
        if metrics is not None:
            metrics.serverless = self.serverless
            metrics.capture = self.capture
        if self.serverless is not None:
            self.serverless.arm()
        for container in supervisor.containers:
            if metrics is not None:
                metrics.warnings[container.name] = container.warnings
            if not container.plan.measurable:  # under Docker: the engine's processes, not ours
                continue
            if metrics is not None:
                metrics.usage[container.name] = partial(_usage, container.process_group)
            if isinstance(container.backend, MultiModelBackend):  # its memory budget is its processes'
                container.backend.store.memory = partial(_memory, container.process_group)

    def _name_logs(self, service: Service, supervisor: Supervisor) -> None:
        """Each container's log, for a ModelError to point at: its file, and a link to it named as
        SageMaker names the log (<logs>/_logs/aws/sagemaker/Endpoints/<EndpointName>/<Variant>/<InstanceId>/
        <ContainerHostname>; `_logs` cannot be an endpoint's name, so it never meets a run folder)."""
        if service.logs is None:
            return
        for container in supervisor.containers:
            log = container.plan.log_path.resolve()
            service.logs.files[container.name] = log
            if self._logs is None:
                continue
            stream = service.logs.stream_path(service.logs.endpoint, service.logs.variant, container.name)
            link = inside(self._logs, LOG_NAMES, *stream.parts)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(log)
            service.logs.files[container.name] = link

    def _progress(self, loop: asyncio.AbstractEventLoop) -> Callable[[str], None]:
        """Where the slow steps before the containers start (downloads, unpacking) say how far they are:
        mce's console (from the event loop's thread) and the deployment's log. Called from a thread."""
        where = self.endpoint.EndpointName + (f"/{self.variant}" if self.variant else "")

        def say(line: str) -> None:
            self._record(line)
            loop.call_soon_threadsafe(self.console.message, f"{where}: {line}")

        return say

    def _record(self, line: str) -> None:
        """A line of the deployment's own log (<run dir>/deployment.log): what each step did, when."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with (self.run_dir / DEPLOYMENT_LOG).open("a", encoding="utf-8") as log:
            log.write(f"{stamp} {line}\n")

    def containers(self) -> list[dict[str, object]]:
        """Each container's state now and its last lines of output (gateway.console)."""
        if self._supervisor is None:
            return []
        return [
            {
                "container": container.name,
                "state": container.status.state,
                "detail": container.status.detail,
                "lines": list(container.last_lines),
            }
            for container in self._supervisor.containers
        ]

    def serve(self) -> None:
        assert self._supervisor is not None, "start() first"
        self._supervisor.watch()

    async def _wake(self) -> None:
        """A serverless variant's cold start: its containers again, healthy, within the start-up window."""
        assert self._supervisor is not None
        began = time.monotonic()
        self._record("cold start: starting the containers again")
        try:
            await self._supervisor.wake(self._startup_timeout)
        except BaseException as exc:
            self._record(f"cold start failed: {exc}")
            raise
        self._record(f"cold start: every container healthy in {time.monotonic() - began:.1f} s")

    async def _sleep(self) -> None:
        assert self._supervisor is not None
        await self._supervisor.sleep()
        self._record("idle: containers stopped until the next invocation")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        if self.serverless is not None:
            await self.serverless.close()
        if self._supervisor is not None:
            await self._supervisor.stop(grace)
            self._supervisor = None
        if self._service is not None:
            await self.gateway.drop(self._service)
            self._service = None
        if self.capture is not None:  # after the drop: no request can add to it any more
            await self.capture.close()
        self.taken_ports -= self._ports
        self._ports = set()


def reclaim(run_dir: Path) -> None:
    """Give back the disk a stopped deployment took (downloaded archives, unpacked models, copies, caches,
    runtime files); its containers' logs stay."""
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.suffix != ".log":
            entry.unlink(missing_ok=True)


def _usage(process_group: Callable[[], int | None]) -> tuple[float, int] | None:
    pgid = process_group()
    return None if pgid is None else group_usage(pgid)


def _memory(process_group: Callable[[], int | None]) -> int | None:
    pgid = process_group()
    return None if pgid is None else group_usage(pgid)[1]
