"""The life cycle of what the local SageMaker hosts: endpoints and inference components, one design for both.

    Creating --start--> InService --update--> Updating --swap, drain--> InService
        \\--fails--> Failed        \\--delete--> Deleting --drain, stop--> (gone)
                                   Updating --the new never healthy--> InService, the old still serving

CreateEndpoint (or CreateInferenceComponent) answers at once; a task then turns what the resource runs into
endpoint documents (each container's `Backend` from the image map, gateway.control.images, or else
Docker's, gateway.launch.docker), launches their containers as `mce up` does (gateway.launch.deployment)
and, when all are healthy, the resource is InService. Anything that goes wrong is its `FailureReason`,
naming the container and what it printed last.

Every change of a hosted resource goes through `Endpoints.transition`: it sets the fields, persists them,
mounts or unmounts the endpoint on the front door from `running` (the one record of what runs) and wakes
whoever waits for the resource to settle. DescribeEndpoint holds its answer up to `describe_hold` seconds
while a resource changes (`mce up --describe-hold`), so boto3's waiter, which polls every 30 s, usually sees
InService on its first call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.async_inference import AsyncConfig
from gateway.capture import Capture, CaptureConfig
from gateway.control.images import ImageMap
from gateway.control.resources import (
    ComponentResource,
    ComponentSpec,
    Deployed,
    EndpointResource,
    Hosted,
    Kind,
    Status,
    containers_of,
)
from gateway.control.shifting import Shift
from gateway.control.state import State
from gateway.endpoint import Endpoint, parse_endpoint
from gateway.errors import DocumentError
from gateway.launch import docker
from gateway.launch.console import Console
from gateway.launch.deployment import Deployment, Host, reclaim
from gateway.launch.modeldata import Limits
from gateway.launch.plan import LaunchError, inside
from gateway.serverless import IDLE_SECONDS, ServerlessConfig
from gateway.service import Service

logger = logging.getLogger(__name__)

CAPTURE_SPILL = "_capture"  # under the state folder: captured data S3 would not take
DESCRIBE_HOLD = 45.0  # seconds; below botocore's 60 s read timeout
MODEL_KEYS = (
    "ModelName",
    "PrimaryContainer",
    "Containers",
    "InferenceExecutionConfig",
    "EnableNetworkIsolation",
)
DOCKER_BACKEND = {"Protocol": "sagemaker", "Launch": {"Runtime": "docker"}}  # the SageMaker contract


@dataclass
class Running:
    """One production variant, shadow variant or inference component, its containers started."""

    variant: str
    weight: float
    deployment: Deployment
    shadow: bool = False  # a shadow variant: sent copies of the production variant's requests

    @property
    def service(self) -> Service:
        return self.deployment.service


class Front(Host, Protocol):
    """The gateway process as the control plane drives it (gateway.app.Gateway): it starts services
    (Host) and mounts them on its front door."""

    def mount(
        self,
        name: str,
        variants: list[tuple[Service, float]],
        asynchronous: AsyncConfig | None = None,
        components: dict[str, Service] | None = None,
        shadow: tuple[Service, float] | None = None,
        previous: tuple[list[tuple[Service, float]], float] | None = None,
    ) -> None:
        """Requests to endpoint `name` reach these services from now on (and that share of them a copy
        to the `shadow` service; with `previous`, only the share it names, the rest the old fleet)."""

    def unmount(self, name: str) -> None:
        """... and no longer."""

    async def drained(self, services: list[Service], timeout: float) -> bool:
        """Until no request that reached `services` is being answered; False after `timeout` seconds."""


class Endpoints:
    def __init__(
        self,
        gateway: Front,
        state: State,
        images: ImageMap,
        run_dir: Path,
        console: Console,
        *,
        startup_timeout: float,
        describe_hold: float = DESCRIBE_HOLD,
        serverless_idle: float = IDLE_SECONDS,
    ) -> None:
        """`serverless_idle`: seconds a serverless variant stays warm without an invocation (0: always)."""
        self.gateway = gateway
        self.state = state
        self.images = images
        self.run_dir = run_dir
        self.console = console
        self.startup_timeout = startup_timeout
        self.describe_hold = describe_hold
        self.serverless_idle = serverless_idle
        self.running: dict[str, list[Running]] = {}  # _key(resource) -> what runs for it now
        # _key(endpoint) -> (the old fleet, the share of requests the new one gets) while an update shifts
        self._shifting: dict[str, tuple[list[Running], float]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._ports: set[int] = set()
        self._planning = asyncio.Lock()

    def running_for(self, resource: Hosted) -> list[Running]:
        """What runs for `resource` now (its variants, or its copy of a component)."""
        return self.running.get(_key(resource), [])

    # the one place a hosted resource changes
    def transition(self, resource: Hosted, status: Status, **changes: Any) -> None:
        """Set `resource`'s status and fields (`changes`), persist them, mount or unmount its endpoint as
        `running` and the statuses now say, and wake whoever waits for it to settle. Status.DELETED
        removes it, with its tags."""
        for name, value in changes.items():
            if not hasattr(resource, name):
                raise AttributeError(f"{type(resource).__name__} has no field {name}")
            setattr(resource, name, value)
        resource.status = status
        resource.modified = time.time()
        if status is Status.DELETED:
            self.state.remove(resource)
        else:
            self.state.save(resource)
        self._route(resource.endpoint if isinstance(resource, ComponentResource) else resource.name)
        event = self._changed.pop(_key(resource), None)
        if event is not None:
            event.set()

    def _route(self, name: str) -> None:
        """Mount endpoint `name` on the front door with what runs for it, or unmount it when it does not
        serve. An endpoint made for inference components is answered by those of them that serve."""
        endpoint = self.state.get(EndpointResource, name)
        if endpoint is None or endpoint.document:
            return  # gone (unmounted when it began Deleting), or mounted by mce up DOC itself
        running = self.running.get(_key(endpoint))
        if not endpoint.status.serving or running is None or endpoint.deployed is None:
            self.gateway.unmount(endpoint.name)
            return
        components = None
        if endpoint.deployed.for_components:
            components = {
                c.name: self.running[_key(c)][0].service
                for c in self.state.all(ComponentResource)
                if c.endpoint.lower() == endpoint.name.lower()
                and c.status.serving
                and _key(c) in self.running
            }
        config = endpoint.deployed.async_config
        asynchronous = AsyncConfig.from_api(config) if config is not None else None
        production = [(r.service, r.weight) for r in running if not r.shadow]
        shifting = self._shifting.get(_key(endpoint))
        previous = None
        if shifting is not None:
            old, share = shifting
            previous = ([(r.service, r.weight) for r in old if not r.shadow], share)
        for r in running:
            metrics = r.service.telemetry.metrics
            if metrics is not None:
                metrics.new_fleet_share = shifting[1] if shifting is not None else None
        self.gateway.mount(
            endpoint.name, production, asynchronous, components, _shadow(production, running), previous
        )

    # what the API asks
    def create(self, resource: EndpointResource | ComponentResource) -> None:
        self.state.add(resource)
        self._run(resource, self._create(resource))

    def update(self, resource: EndpointResource | ComponentResource, to: Deployed | ComponentSpec) -> None:
        self.transition(resource, Status.UPDATING, pending=to)
        self._run(resource, self._update(resource, to))

    def reweigh(self, endpoint: EndpointResource, weights: dict[str, float]) -> None:
        """UpdateEndpointWeightsAndCapacities: requests follow the new weights at once; the endpoint is
        Updating until the next turn of the event loop, then InService, as SageMaker reports it."""
        assert endpoint.deployed is not None
        for running in self.running.get(_key(endpoint), []):
            running.weight = weights.get(running.variant, running.weight)
        self.transition(endpoint, Status.UPDATING, deployed=endpoint.deployed.weighted(weights))

        async def settle() -> None:
            self.transition(endpoint, Status.IN_SERVICE)

        self._run(endpoint, settle())

    def delete(self, resource: EndpointResource | ComponentResource) -> None:
        previous = self._tasks.get(_key(resource))
        self.transition(resource, Status.DELETING)  # unmounted (or left out of its endpoint) from now on
        self._run(resource, self._delete(resource, previous))

    async def settled(self, resource: Hosted) -> Hosted | None:
        """The resource once it no longer changes, or after `describe_hold` seconds, as it is then; None
        if it has gone meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.describe_hold
        cls = type(resource)
        while True:
            current = self.state.get(cls, resource.name)
            left = deadline - loop.time()
            if current is None or not current.status.changing or left <= 0:
                return current
            event = self._changed.setdefault(_key(current), asyncio.Event())
            try:
                async with asyncio.timeout(left):
                    await event.wait()
            except TimeoutError:
                pass

    # start-up and shut-down of the whole local SageMaker
    async def restore(self) -> None:
        """Bring back what was running when the last `mce up` stopped: every endpoint and inference
        component that was InService (or on its way there) is created again from what it ran."""
        for cls in (EndpointResource, ComponentResource):
            for resource in self.state.all(cls):
                assert isinstance(resource, (EndpointResource, ComponentResource))
                if isinstance(resource, EndpointResource) and resource.document:
                    continue  # mce up DOC runs it itself
                if resource.status is Status.DELETING:
                    self.transition(resource, Status.DELETED)
                elif resource.status in (Status.IN_SERVICE, Status.CREATING, Status.UPDATING):
                    self.transition(resource, Status.CREATING, failure=None, pending=None)
                    self._run(resource, self._create(resource))

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for key in list(self.running):
            await _stop(self.running.pop(key))

    # the work, the same for both kinds
    def _run(self, resource: Hosted, work: Coroutine[Any, Any, None]) -> None:
        key = _key(resource)
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is finished:
                del self._tasks[key]
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("%s %s: %s", resource.kind.what, resource.name, finished.exception())

        task.add_done_callback(done)

    async def _create(self, resource: EndpointResource | ComponentResource) -> None:
        what = f"{resource.kind.what} {resource.name}"
        if isinstance(resource, ComponentResource):
            endpoint = self.state.get(EndpointResource, resource.endpoint)
            if endpoint is not None:
                await self._settle(endpoint)  # an endpoint still being created gets its components after
        try:
            running = await self._start(resource, resource.deployed)
        except LaunchError as exc:
            self.transition(resource, Status.FAILED, failure=str(exc))
            self.console.message(f"{what} failed: {exc}")
            return
        self.running[_key(resource)] = running
        self.transition(resource, Status.IN_SERVICE, failure=None)
        self.console.message(f"{what} is InService")

    async def _update(
        self, resource: EndpointResource | ComponentResource, to: Deployed | ComponentSpec
    ) -> None:
        """Blue/green: the new containers start beside the old; once they are healthy requests move to them
        in the steps of the endpoint's DeploymentConfig (gateway.control.shifting; all at once without
        one); the old stay for its bake and termination wait, then drain and stop; only then is the
        resource InService again. What never gets healthy, or an update past its
        MaximumExecutionTimeoutInSeconds, leaves the old serving, and the resource InService with the
        failure stated."""
        key = _key(resource)
        shift = Shift()
        if isinstance(resource, EndpointResource) and isinstance(to, Deployed):
            shift = Shift.from_config(resource.last_deployment, to.instances)  # checked by UpdateEndpoint
        named = f" to {to.config}" if isinstance(to, Deployed) else ""
        old = self.running.get(key, [])
        running: list[Running] = []
        try:
            async with asyncio.timeout(shift.deadline):
                running = await self._start(resource, to)
                self.running[key] = running
                for share, wait in shift.steps:  # requests move to the new fleet, step by step
                    if share < 1.0:
                        self._shifting[key] = (old, share)
                    else:
                        self._shifting.pop(key, None)
                    self.transition(resource, Status.UPDATING)  # mounted as `running` and the shift say
                    if wait:
                        self.console.message(f"{resource.name}: {share:.0%} of requests to the new fleet")
                        await asyncio.sleep(wait)
                if shift.keep_old:
                    await asyncio.sleep(shift.keep_old)  # baking, then TerminationWaitInSeconds
        except LaunchError as exc:
            failure = f"The update{named} failed and was rolled back: {exc}"
            self.transition(resource, Status.IN_SERVICE, pending=None, failure=failure)
            return
        except TimeoutError:
            self._shifting.pop(key, None)
            self.running[key] = old
            failure = (
                f"The update{named} did not finish within its MaximumExecutionTimeoutInSeconds "
                f"({shift.deadline:g} s) and was rolled back."
            )
            self.transition(resource, Status.IN_SERVICE, pending=None, failure=failure)
            await self._retire(resource, running)
            return
        except asyncio.CancelledError:  # deleted, or mce stopping, midway: the old fleet goes too
            self._shifting.pop(key, None)
            if self.running.get(key) is not old:
                await self._retire(resource, old)
            raise
        await self._retire(resource, old)
        self.transition(resource, Status.IN_SERVICE, deployed=to, pending=None, failure=None)

    async def _delete(
        self, resource: EndpointResource | ComponentResource, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        await self._retire(resource, self.running.pop(_key(resource), []))
        self.transition(resource, Status.DELETED)
        self.console.message(f"{resource.kind.what} {resource.name} deleted")

    async def _settle(self, endpoint: EndpointResource) -> None:
        """Until the endpoint no longer changes (however long that takes)."""
        while True:
            current = self.state.get(EndpointResource, endpoint.name)
            if current is None or not current.status.changing:
                return
            await self._changed.setdefault(_key(current), asyncio.Event()).wait()

    async def _start(
        self, resource: EndpointResource | ComponentResource, what: Deployed | ComponentSpec | None
    ) -> list[Running]:
        """Start every container of `what`; all of them, or none (LaunchError)."""
        assert what is not None
        started: list[Running] = []
        try:
            if isinstance(what, Deployed):
                shadows = {variant.name for variant in what.shadows}
                for variant in what.variants + what.shadows:
                    if variant.model is None:  # an endpoint for inference components: they bring containers
                        continue
                    document = await self._document(
                        resource.name,
                        variant.name,
                        variant.model,
                        detailed=what.detailed_observability,
                        memory=variant.serverless["MemorySizeInMB"] if variant.serverless else None,
                    )
                    folder = self._run_dir(resource.name, what.config, variant.name)
                    capture = self._capture(resource.name, variant.name, what)
                    deployment = self._deployment(
                        document, folder, variant.name, None, variant.limits, capture, variant.serverless
                    )
                    started.append(Running(variant.name, variant.weight, deployment, variant.name in shadows))
                    await deployment.start(variant.startup_timeout or self.startup_timeout)
            else:
                assert isinstance(resource, ComponentResource)
                document = await self._document(
                    resource.endpoint,
                    f"inference component {resource.name}",
                    _component_model(resource, what),
                )
                folder = self._run_dir(resource.endpoint, "components", resource.name)
                deployment = self._deployment(document, folder, what.variant, resource.name, what.limits)
                started.append(Running(resource.name, 1.0, deployment))
                await deployment.start(what.startup_timeout or self.startup_timeout)
        except BaseException:
            await _stop(started)
            raise
        for running in started:
            running.deployment.serve()  # restart containers that exit, from now on
        return started

    def _capture(self, endpoint: str, variant: str, what: Deployed) -> Capture | None:
        """A production or shadow variant's data capture, when its endpoint configuration asks for one;
        what cannot reach S3 by the time it stops is kept under <state>/_capture."""
        config = CaptureConfig.from_request(what.request.get("DataCaptureConfig"))
        if config is None:
            return None
        return Capture(config, endpoint, variant, spill=self.run_dir / CAPTURE_SPILL)

    def _deployment(
        self,
        document: Endpoint,
        folder: Path,
        variant: str,
        component: str | None,
        limits: Limits,
        capture: Capture | None = None,
        serverless: dict[str, Any] | None = None,
    ) -> Deployment:
        return Deployment(
            self.gateway,
            document,
            base=Path.cwd(),
            run_dir=folder,
            console=self.console,
            variant=variant,
            component=component,
            limits=limits,
            capture=capture,
            serverless=ServerlessConfig.from_variant(serverless) if serverless is not None else None,
            idle=self.serverless_idle,
            taken_ports=self._ports,
            planning=self._planning,
            logs=self.run_dir,
        )

    async def _retire(self, resource: Hosted, old: list[Running]) -> None:
        """Let the requests that reached these (no longer mounted) containers finish, within the longest
        invocation timeout among them, then stop them and give back the disk they took."""
        deployments = [r.deployment for r in old]
        timeout = max(
            (c.Backend.InvocationTimeoutInSeconds for d in deployments for c in d.endpoint.containers),
            default=0.0,
        )
        if not await self.gateway.drained([d.service for d in deployments], timeout):
            logger.warning(
                "%s: requests still unanswered after %g s; stopping anyway", resource.name, timeout
            )
        await _stop(old)
        for deployment in deployments:  # its model data and copies; the logs stay
            await asyncio.to_thread(reclaim, deployment.run_dir)

    def _run_dir(self, name: str, config: str, variant: str) -> Path:
        """<state>/<endpoint>/<configuration>/<variant>: logs and files; during an update the old and the
        new variant run side by side, each in its own folder."""
        used = {r.deployment.run_dir for running in self.running.values() for r in running}
        folder, n = inside(self.run_dir, name, config, variant), 1
        while folder in used:
            n += 1
            folder = inside(self.run_dir, name, config, f"{variant}-{n}")
        return folder

    async def _document(
        self,
        name: str,
        variant: str,
        model: dict[str, Any],
        *,
        detailed: bool | None = None,
        memory: int | None = None,
    ) -> Endpoint:
        """The endpoint document of one variant: its model, each container's Backend from the image map,
        or, for an image the map does not know, Docker's (when the engine has it or can pull it).
        `detailed`: the configuration's EnableDetailedObservability, under which every container's own
        metrics are scraped (SageMaker's default path, /metrics, unless its ContainerMetricsConfig says);
        None (an inference component): those with a ContainerMetricsConfig. `memory`: a serverless
        variant's MemorySizeInMB, each container's memory limit (enforced where the runtime can: Docker)."""
        backends = {}
        for container in containers_of(model):
            image = container.get("Image", "")
            backend = self.images.backend(image)
            if backend is None:
                try:
                    await asyncio.to_thread(docker.image, image)  # a pull may take minutes
                except docker.DockerError as exc:
                    raise LaunchError(f"variant {variant}: {self.images.unknown(image, str(exc))}") from None
                backend = DOCKER_BACKEND
            backends[image] = backend
        document = model_document(name, model, lambda container: backends[container.get("Image", "")])
        for container in containers_of(document):
            if detailed is False:
                container.pop("ContainerMetricsConfig", None)
            elif detailed:
                container.setdefault("ContainerMetricsConfig", {})
            if memory is not None:
                backend = container["Backend"] = {**container["Backend"]}
                backend["Resources"] = {**backend.get("Resources", {}), "MemoryLimit": f"{memory}Mi"}
        try:
            return parse_endpoint(document, source=f"endpoint {name}", default_name=name)
        except DocumentError as exc:
            raise LaunchError(f"variant {variant}: {exc}") from None


def _key(resource: Hosted) -> str:
    """Endpoints by their name, components by inference-component/name (an endpoint's name has no `/`)."""
    return (
        resource.name.lower()
        if resource.kind is Kind.ENDPOINT
        else f"{resource.kind}/{resource.name.lower()}"
    )


def _shadow(production: list[tuple[Service, float]], running: list[Running]) -> tuple[Service, float] | None:
    """The shadow variant and the share of requests it gets a copy of: its weight over the production
    variant's, at most all (SageMaker's shadow-variant example: production 1, shadow 0.5, half copied)."""
    shadows = [r for r in running if r.shadow]
    if not shadows or len(production) != 1:
        return None
    weight = production[0][1]
    return shadows[0].service, min(1.0, shadows[0].weight / weight) if weight > 0 else 0.0


async def _stop(running: list[Running]) -> None:
    for r in running:
        await r.deployment.stop()


def _component_model(component: ComponentResource, spec: ComponentSpec) -> dict[str, Any]:
    """A component's containers, as a CreateModel request: its model's, or its Container (Image,
    ArtifactUrl, Environment); a single container is named after the component (logs, metrics)."""
    model = spec.model
    if model is None:
        container = spec.specification["Container"]
        model = {
            "PrimaryContainer": {
                "Image": container.get("Image", ""),
                **({"ModelDataUrl": container["ArtifactUrl"]} if "ArtifactUrl" in container else {}),
                **({"Environment": container["Environment"]} if "Environment" in container else {}),
                **(
                    {"ContainerMetricsConfig": container["ContainerMetricsConfig"]}
                    if "ContainerMetricsConfig" in container
                    else {}
                ),
            }
        }
    if "PrimaryContainer" in model:
        model = {
            **model,
            "PrimaryContainer": {**model["PrimaryContainer"], "ContainerHostname": component.name},
        }
    return model


def model_document(
    name: str, model: dict[str, Any], backend: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """The endpoint document `name` for a CreateModel request (as DescribeModel gives it back), each
    container's Backend from `backend`."""
    document: dict[str, Any] = {key: model[key] for key in MODEL_KEYS if key in model}
    document["EndpointName"] = name
    containers = [{**container, "Backend": backend(container)} for container in containers_of(model)]
    if "Containers" in model:
        document["Containers"] = containers
    else:
        document["PrimaryContainer"] = containers[0]
    return document
