"""Endpoints' life cycle in the local SageMaker: Creating -> InService | Failed, Updating, Deleting.

CreateEndpoint answers at once; a task then turns each production variant's model into an endpoint
document (its containers' `Backend` from the image map, gateway.control.images, or else Docker's,
gateway.launch.docker), launches the containers
as `mce up` does (gateway.launch.deployment) and, when all are healthy, mounts the endpoint on the front
door: `InService`. Anything that goes wrong is the endpoint's `FailureReason`, naming the container and
what it printed last. DescribeEndpoint waits (up to `settle_wait`) for a changing endpoint to settle, so
boto3's waiter, which polls every 30 s, usually sees InService on its first call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.async_inference import AsyncConfig
from gateway.control.images import ImageMap
from gateway.control.state import COMPONENT, ENDPOINT, Resource, State
from gateway.endpoint import Endpoint, parse_endpoint
from gateway.errors import DocumentError
from gateway.launch import docker
from gateway.launch.console import Console
from gateway.launch.deployment import Deployment
from gateway.launch.plan import LaunchError, inside
from gateway.service import Service

logger = logging.getLogger(__name__)

SETTLE_WAIT = 45.0  # below botocore's 60 s read timeout
CHANGING = ("Creating", "Updating", "Deleting")
MODEL_KEYS = (
    "ModelName",
    "PrimaryContainer",
    "Containers",
    "InferenceExecutionConfig",
    "EnableNetworkIsolation",
)
DOCKER_BACKEND = {"Protocol": "sagemaker", "Launch": {"Runtime": "docker"}}  # the SageMaker contract


class Variant:
    """One production variant, running."""

    def __init__(self, weight: float, deployment: Deployment) -> None:
        self.weight = weight
        self.deployment = deployment

    @property
    def service(self) -> Service:
        return self.deployment.service


class Endpoints:
    def __init__(
        self,
        gateway: Gateway,
        state: State,
        images: ImageMap,
        run_dir: Path,
        console: Console,
        *,
        startup_timeout: float,
        settle_wait: float = SETTLE_WAIT,
    ) -> None:
        self.gateway = gateway
        self.state = state
        self.images = images
        self.run_dir = run_dir
        self.console = console
        self.startup_timeout = startup_timeout
        self.settle_wait = settle_wait
        self.live: dict[str, list[Variant]] = {}  # endpoint name (lower case) -> its running variants
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._ports: set[int] = set()
        self._planning = asyncio.Lock()
        self._pending: dict[str, dict[str, Any]] = {}  # endpoint (lower case) -> what an update moves to
        # endpoint (lower case) -> its inference components, running
        self.components: dict[str, dict[str, Deployment]] = {}

    # what the API asks
    def create(self, name: str) -> None:
        self._run(name, self._create(name))

    def update(self, name: str, snapshot: dict[str, Any]) -> None:
        self.state.update(ENDPOINT, name, status="Updating", pending=snapshot["config"]["EndpointConfigName"])
        self._pending[name.lower()] = snapshot
        self._run(name, self._update(name, snapshot))

    def delete(self, name: str) -> None:
        previous = self._tasks.get(name.lower())
        self.state.update(ENDPOINT, name, status="Deleting")
        self._run(name, self._delete(name, previous))

    async def settled(self, name: str, kind: str = ENDPOINT) -> None:
        """Until the endpoint (or inference component) is no longer changing, or `settle_wait` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_wait
        while True:
            resource = self.state.get(kind, name)
            if resource is None or resource.status not in CHANGING:
                return
            event = self._changed.setdefault(_key(kind, name), asyncio.Event())
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    await event.wait()
            except TimeoutError:
                return

    def deploying(self, *, model: str | None = None, config: str | None = None) -> str | None:
        """An endpoint being created or updated from this model or configuration, if any."""
        for endpoint in self.state.all(ENDPOINT):
            if endpoint.status not in ("Creating", "Updating") or endpoint.deployed is None:
                continue
            snapshots = [endpoint.deployed]  # an update also deploys from what it moves to
            pending = self._pending.get(endpoint.name.lower())
            if pending is not None:
                snapshots.append(pending)
            for snapshot in snapshots:
                if config is not None and snapshot["config"]["EndpointConfigName"].lower() == config.lower():
                    return endpoint.name
                if model is not None and any(
                    m is not None and m["ModelName"].lower() == model.lower()
                    for m in snapshot["models"].values()
                ):
                    return endpoint.name
        return None

    def variants(self, endpoint: Resource) -> list[dict[str, Any]]:
        """DescribeEndpoint's ProductionVariants: each variant's image, weight and instance count."""
        if endpoint.deployed is None or endpoint.status in ("Creating", "Failed"):
            return []
        summaries = []
        for variant in endpoint.deployed["config"]["ProductionVariants"]:
            model = endpoint.deployed["models"][variant["VariantName"]]
            images = [c.get("Image", "") for c in _containers(model)] if model is not None else []
            weight = float(variant.get("InitialVariantWeight", 1.0))
            count = 1  # one local replica per variant, whatever InitialInstanceCount asks (README)
            summaries.append(
                {
                    "VariantName": variant["VariantName"],
                    "DeployedImages": [
                        {"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": endpoint.created}
                        for image in images
                    ],
                    "CurrentWeight": weight,
                    "DesiredWeight": weight,
                    "CurrentInstanceCount": count,
                    "DesiredInstanceCount": count,
                }
            )
        return summaries

    # inference components: each its own containers on an endpoint made for them
    def create_component(self, name: str) -> None:
        self._run(name, self._create_component(name), COMPONENT)

    def update_component(self, name: str, snapshot: dict[str, Any]) -> None:
        self.state.update(COMPONENT, name, status="Updating")
        self._run(name, self._update_component(name, snapshot), COMPONENT)

    def delete_component(self, name: str) -> None:
        previous = self._tasks.get(_key(COMPONENT, name))
        self.state.update(COMPONENT, name, status="Deleting")
        self._run(name, self._delete_component(name, previous), COMPONENT)

    async def _create_component(self, name: str) -> None:
        resource = self.state.get(COMPONENT, name)
        assert resource is not None and resource.deployed is not None
        endpoint = resource.request["EndpointName"]
        await self.settled(endpoint)  # an endpoint still being created gets its components after
        try:
            deployment = await self._deploy_component(resource.name, endpoint, resource.deployed)
        except LaunchError as exc:
            self.state.update(COMPONENT, name, status="Failed", failure=str(exc))
            self.console.message(f"inference component {name} failed: {exc}")
        else:
            self.components.setdefault(endpoint.lower(), {})[resource.name] = deployment
            deployment.serve()
            self._remount(endpoint)
            self.state.update(COMPONENT, name, status="InService", failure=None)
            self.console.message(f"inference component {name} is InService on endpoint {endpoint}")
        self._settle(name, COMPONENT)

    async def _update_component(self, name: str, snapshot: dict[str, Any]) -> None:
        """Blue/green, as an endpoint's update: the new containers start beside the old ones, requests
        move once they are healthy, the old drain and stop. A failed update leaves the old serving."""
        resource = self.state.get(COMPONENT, name)
        assert resource is not None
        endpoint = resource.request["EndpointName"]
        try:
            deployment = await self._deploy_component(resource.name, endpoint, snapshot)
        except LaunchError as exc:
            self.state.update(
                COMPONENT, name, status="InService", failure=f"The update failed and was rolled back: {exc}"
            )
            self._settle(name, COMPONENT)
            return
        serving = self.components.setdefault(endpoint.lower(), {})
        old = serving.get(resource.name)
        serving[resource.name] = deployment
        deployment.serve()
        self._remount(endpoint)
        if old is not None:
            await self._drain(name, [old])
            await old.stop()
        self.state.update(COMPONENT, name, status="InService", failure=None, deployed=snapshot)
        self._settle(name, COMPONENT)

    async def _delete_component(self, name: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        resource = self.state.get(COMPONENT, name)
        assert resource is not None
        endpoint = resource.request["EndpointName"]
        old = self.components.get(endpoint.lower(), {}).pop(resource.name, None)
        self._remount(endpoint)
        if old is not None:
            await self._drain(name, [old])
            await old.stop()
        self.state.remove(COMPONENT, name)
        self.console.message(f"inference component {name} deleted")
        self._settle(name, COMPONENT)

    async def _deploy_component(self, name: str, endpoint: str, snapshot: dict[str, Any]) -> Deployment:
        """A component's containers, started: its model's, or its Container (Image, ArtifactUrl,
        Environment), as one endpoint document on its endpoint's variant."""
        spec = snapshot["specification"]
        model = snapshot["model"]
        if model is None:
            container = spec["Container"]
            model = {
                "PrimaryContainer": {
                    "Image": container.get("Image", ""),
                    **({"ModelDataUrl": container["ArtifactUrl"]} if "ArtifactUrl" in container else {}),
                    **({"Environment": container["Environment"]} if "Environment" in container else {}),
                }
            }
        if "PrimaryContainer" in model:  # its one container is named after the component (logs, metrics)
            model = {**model, "PrimaryContainer": {**model["PrimaryContainer"], "ContainerHostname": name}}
        document = await self._document(endpoint, {"VariantName": f"inference component {name}"}, model)
        startup = spec.get("StartupParameters", {}).get(
            "ContainerStartupHealthCheckTimeoutInSeconds", self.startup_timeout
        )
        deployment = Deployment(
            self.gateway,
            document,
            base=Path.cwd(),
            run_dir=self._run_dir(endpoint, "components", name),
            console=self.console,
            variant=snapshot["variant"],
            component=name,
            taken_ports=self._ports,
            planning=self._planning,
            logs=self.run_dir,
        )
        await deployment.start(float(startup))
        return deployment

    def _remount(self, endpoint: str) -> None:
        """Mount an endpoint made for components with the components it has now (once it serves)."""
        resource = self.state.get(ENDPOINT, endpoint)
        if resource is None or resource.name.lower() not in self.live or resource.deployed is None:
            return
        self._mount(resource.name, self.live[resource.name.lower()], resource.deployed)

    async def restore_components(self) -> None:
        """Components that were serving come back once their endpoint has (each waits for it)."""
        for component in self.state.all(COMPONENT):
            if component.status == "Deleting":
                self.state.remove(COMPONENT, component.name)
            elif component.status in ("InService", "Creating", "Updating"):
                self.state.update(COMPONENT, component.name, status="Creating", failure=None)
                self.create_component(component.name)

    # start-up and shut-down of the whole local SageMaker
    async def restore(self) -> None:
        """Bring back what was running when the last `mce up` stopped: every endpoint that was InService
        (or on its way there) is created again from what it was deployed with."""
        for endpoint in self.state.all(ENDPOINT):
            if endpoint.status == "Deleting":
                self.state.remove(ENDPOINT, endpoint.name)
            elif endpoint.status in ("InService", "Creating", "Updating"):
                self.state.update(ENDPOINT, endpoint.name, status="Creating", failure=None, pending=None)
                self.create(endpoint.name)
        await self.restore_components()

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for key in list(self.live):
            await self._stop(key, self.live.pop(key))
        for components in self.components.values():
            for deployment in components.values():
                await deployment.stop()
        self.components.clear()

    # the work
    def _run(self, name: str, work: Coroutine[Any, Any, None], kind: str = ENDPOINT) -> None:
        key = _key(kind, name)
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is finished:
                del self._tasks[key]
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("%s %s: %s", kind, name, finished.exception())

        task.add_done_callback(done)

    def _settle(self, name: str, kind: str = ENDPOINT) -> None:
        event = self._changed.pop(_key(kind, name), None)
        if event is not None:
            event.set()

    async def _create(self, name: str) -> None:
        resource = self.state.get(ENDPOINT, name)
        assert resource is not None and resource.deployed is not None
        try:
            variants = await self._deploy(resource.name, resource.deployed)
        except LaunchError as exc:
            self.state.update(ENDPOINT, name, status="Failed", failure=str(exc))
            self.console.message(f"endpoint {name} failed: {exc}")
        else:
            self.live[name.lower()] = variants
            self._mount(resource.name, variants, resource.deployed)
            self.state.update(ENDPOINT, name, status="InService", failure=None)
            self.console.message(f"endpoint {name} is InService")
        self._settle(name)

    async def _update(self, name: str, snapshot: dict[str, Any]) -> None:
        """Blue/green: the new variants start beside the old; traffic moves once they are healthy; the old
        drain and stop; only then is the endpoint InService again. A new configuration that never gets
        healthy leaves the old one serving, and the endpoint InService with the failure stated."""
        try:
            variants = await self._deploy(name, snapshot)
        except LaunchError as exc:
            self._pending.pop(name.lower(), None)
            self.state.update(
                ENDPOINT,
                name,
                status="InService",
                pending=None,
                failure=f"The update to {snapshot['config']['EndpointConfigName']} failed and was rolled "
                f"back: {exc}",
            )
            self._settle(name)
            return
        old = self.live.get(name.lower(), [])
        self.live[name.lower()] = variants
        self._mount(name, variants, snapshot)
        await self._drain(name, [variant.deployment for variant in old])
        await self._stop(name, old)
        self._pending.pop(name.lower(), None)
        self.state.update(
            ENDPOINT,
            name,
            status="InService",
            failure=None,
            pending=None,
            config=snapshot["config"]["EndpointConfigName"],
            deployed=snapshot,
        )
        self._settle(name)

    async def _delete(self, name: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        self.gateway.unmount(name)
        old = self.live.pop(name.lower(), [])
        await self._drain(name, [variant.deployment for variant in old])
        await self._stop(name, old)
        self.state.remove(ENDPOINT, name)
        self.console.message(f"endpoint {name} deleted")
        self._settle(name)

    async def _deploy(self, name: str, snapshot: dict[str, Any]) -> list[Variant]:
        """Start every variant of `snapshot`; all of them, or none (LaunchError)."""
        variants: list[Variant] = []
        try:
            for variant in snapshot["config"]["ProductionVariants"]:
                model = snapshot["models"][variant["VariantName"]]
                if model is None:  # an endpoint for inference components: they bring the containers
                    continue
                endpoint = await self._document(name, variant, model)
                timeout = float(
                    variant.get("ContainerStartupHealthCheckTimeoutInSeconds", self.startup_timeout)
                )
                deployment = Deployment(
                    self.gateway,
                    endpoint,
                    base=Path.cwd(),
                    run_dir=self._run_dir(
                        name, snapshot["config"]["EndpointConfigName"], variant["VariantName"]
                    ),
                    console=self.console,
                    variant=variant["VariantName"],
                    taken_ports=self._ports,
                    planning=self._planning,
                    logs=self.run_dir,
                )
                await deployment.start(timeout)
                variants.append(Variant(float(variant.get("InitialVariantWeight", 1.0)), deployment))
        except BaseException:
            await self._stop(name, variants)
            raise
        return variants

    def _run_dir(self, name: str, config: str, variant: str) -> Path:
        """<state>/<endpoint>/<configuration>/<variant>: logs and files; during an update the old and the
        new variant run side by side, each in its own folder."""
        used = {v.deployment.run_dir for variants in self.live.values() for v in variants}
        folder, n = inside(self.run_dir, name, config, variant), 1
        while folder in used:
            n += 1
            folder = inside(self.run_dir, name, config, f"{variant}-{n}")
        return folder

    async def _document(self, name: str, variant: dict[str, Any], model: dict[str, Any]) -> Endpoint:
        """The endpoint document of one variant: its model, each container's Backend from the image map,
        or, for an image the map does not know, Docker's (when the engine has it or can pull it)."""
        backends = {}
        for container in _containers(model):
            image = container.get("Image", "")
            backend = self.images.backend(image)
            if backend is None:
                try:
                    await asyncio.to_thread(docker.image, image)  # a pull may take minutes
                except docker.DockerError as exc:
                    raise LaunchError(
                        f"variant {variant['VariantName']}: {self.images.unknown(image, str(exc))}"
                    ) from None
                backend = DOCKER_BACKEND
            backends[image] = backend
        document = model_document(name, model, lambda container: backends[container.get("Image", "")])
        try:
            return parse_endpoint(document, source=f"endpoint {name}", default_name=name)
        except DocumentError as exc:
            raise LaunchError(f"variant {variant['VariantName']}: {exc}") from None

    def _mount(self, name: str, variants: list[Variant], snapshot: dict[str, Any]) -> None:
        for variant in variants:
            variant.deployment.serve()
        config = snapshot["config"].get("AsyncInferenceConfig")
        asynchronous = AsyncConfig.from_api(config) if config is not None else None
        components = None
        if all(model is None for model in snapshot["models"].values()):  # made for inference components
            serving = self.components.get(name.lower(), {})
            components = {component: deployment.service for component, deployment in serving.items()}
        self.gateway.mount(name, [(v.service, v.weight) for v in variants], asynchronous, components)

    async def _drain(self, name: str, deployments: list[Deployment]) -> None:
        """Let the requests that reached these (unmounted) deployments finish, within the longest
        invocation timeout of their containers."""
        timeout = max(
            (c.Backend.InvocationTimeoutInSeconds for d in deployments for c in d.endpoint.containers),
            default=0.0,
        )
        if not await self.gateway.drained([d.service for d in deployments], timeout):
            logger.warning("%s: requests still unanswered after %g s; stopping anyway", name, timeout)

    async def _stop(self, name: str, variants: Iterable[Variant]) -> None:
        for variant in variants:
            await variant.deployment.stop()


def _key(kind: str, name: str) -> str:
    """Endpoints by their name, other kinds by kind/name (an endpoint's name has no `/`)."""
    return name.lower() if kind == ENDPOINT else f"{kind}/{name.lower()}"


def model_document(
    name: str, model: dict[str, Any], backend: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """The endpoint document `name` for a CreateModel request (as DescribeModel gives it back), each
    container's Backend from `backend`."""
    document: dict[str, Any] = {key: model[key] for key in MODEL_KEYS if key in model}
    document["EndpointName"] = name
    containers = [{**container, "Backend": backend(container)} for container in _containers(model)]
    if "Containers" in model:
        document["Containers"] = containers
    else:
        document["PrimaryContainer"] = containers[0]
    return document


def _containers(model: dict[str, Any]) -> list[dict[str, Any]]:
    containers = model.get("Containers")
    return list(containers) if containers is not None else [model["PrimaryContainer"]]
