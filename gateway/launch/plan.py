"""How `mce up` will start each container, as SageMaker would: decided before anything starts.

Per container without a `Backend.Url`: a port allocation (SAGEMAKER_BIND_TO_PORT, SAGEMAKER_SAFE_PORT_RANGE),
its model data made local (a MultiModel container's models are the gateway's to load, gateway.multimodel),
its `Environment`, SAGEMAKER_MULTI_MODEL when it is a MultiModel container (and, natively, an `s3://`
SAGEMAKER_SUBMIT_DIRECTORY fetched into MCE_CODE_DIR), and how it starts: natively,
its `Launch.Command` (and `Prepare`) with paths next to the endpoint document made absolute; or under
Docker (`Launch.Runtime: docker`), `docker run` of its `Image` (gateway.launch.docker). The endpoint comes
back with each launched container's address filled in, for the data plane.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.endpoint import BackendSpec, Container, ContainerMode, Endpoint, memory_bytes
from gateway.launch import docker, layout
from gateway.launch.modeldata import Limits, ModelDataError, Say, code_directory, model_directory
from gateway.launch.ports import PortAllocation, allocate


class LaunchError(Exception):
    """A container cannot be planned or started; the message names it and says what to do."""


def inside(root: Path, *names: str) -> Path:
    """`root/names...`, proven to stay inside `root`: each name one plain path component (no `/`, `..`,
    NUL, nothing empty), and the result under `root` once resolved. Names from requests (endpoint,
    configuration, variant, component, container) become folders only through here (LaunchError
    otherwise)."""
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
            raise LaunchError(f"{name!r} cannot name a folder: it must be one plain path component")
    folder = root.joinpath(*names)
    # where the entry itself is (a log's link may point elsewhere), and never a link to a folder outside
    if not folder.parent.resolve().is_relative_to(root.resolve()) or (
        folder.is_symlink() and folder.is_dir() and not folder.resolve().is_relative_to(root.resolve())
    ):
        raise LaunchError(f"{folder} is not inside {root}")
    return folder


@dataclass
class ContainerPlan:
    """Everything it takes to start one container."""

    index: int
    name: str
    argv: list[str]
    prepare: list[str] | None
    env: dict[str, str]
    ports: PortAllocation
    log_path: Path
    cleanup: list[str] | None = None  # run after the container's command exits (Docker: remove it)
    measurable: bool = True  # its process group is the container's processes (not so under Docker)


@dataclass(frozen=True)
class Fetched:
    """A container's model data and code, made local before it is planned."""

    model_dir: Path | None = None
    code_dir: Path | None = None


def fetch(
    endpoint: Endpoint, document_dir: Path, run_dir: Path, limits: Limits, say: Say | None = None
) -> dict[int, Fetched]:
    """Each launched container's model data (and an s3:// or https:// SAGEMAKER_SUBMIT_DIRECTORY), made
    local within `limits`; `say`: where each step's progress goes, a line at a time. Blocks, for as long
    as downloads take: run it in a thread, and without holding anything another endpoint waits for."""
    fetched: dict[int, Fetched] = {}
    for index, container in enumerate(endpoint.containers):
        launch = container.Backend.Launch
        if container.Backend.Url is not None or launch is None:
            continue
        name = endpoint.hostname(index)
        container_dir = inside(run_dir, name)
        said = _prefixed(say, name)
        model_dir: Path | None = None
        if container.ModelDataUrl is not None and container.Mode is not ContainerMode.MULTI_MODEL:
            try:
                model_dir = model_directory(container.ModelDataUrl, document_dir, container_dir, limits, said)
            except ModelDataError as exc:
                if launch.Prepare is None:  # a Prepare step may be what builds it
                    raise LaunchError(f"{name}: {exc}") from None
                model_dir = (document_dir / container.ModelDataUrl).resolve()
        code_dir: Path | None = None
        submitted = container.Environment.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
        if launch.Runtime != "docker" and urlsplit(submitted).scheme in ("s3", "https", "http"):
            entry = container.Environment.get("SAGEMAKER_PROGRAM", "inference.py")
            try:  # fetched as SageMaker's toolkits do
                code_dir = code_directory(submitted, container_dir, entry, limits, said)
            except ModelDataError as exc:
                raise LaunchError(f"{name}: {exc}") from None
        fetched[index] = Fetched(model_dir, code_dir)
    return fetched


def plan(
    endpoint: Endpoint,
    document_dir: Path,
    run_dir: Path,
    *,
    taken_ports: set[int],
    model_cache: Path | None = None,
    fetched: dict[int, Fetched] | None = None,
) -> tuple[Endpoint, list[ContainerPlan]]:
    """The endpoint as it will be served (launched containers' addresses filled in) and how to launch them;
    `fetched`: what `fetch` made local (fetched here, with the default limits, when not given).

    Blocks (Docker is asked): run it in a thread."""
    if fetched is None:
        fetched = fetch(endpoint, document_dir, run_dir, Limits())
    plans: list[ContainerPlan] = []
    served: dict[int, BackendSpec] = {}
    taken = set(taken_ports)
    shared_network = len(endpoint.containers) > 1  # SageMaker's multi-container environment (spec §2.2)
    if any(c.Backend.Launch and c.Backend.Launch.Runtime == "docker" for c in endpoint.containers):
        docker.remove_leftovers(run_dir.resolve())
    for index, container in enumerate(endpoint.containers):
        backend = container.Backend
        name = endpoint.hostname(index)
        if backend.Url is not None:
            continue
        launch = backend.Launch
        if launch is None:
            raise LaunchError(
                f"{name}: Backend has neither Url (a running container) nor Launch.Command (how to start it)"
            )
        ports = allocate(taken=taken)
        taken.update(range(ports.bind, ports.last + 1))
        container_dir = inside(run_dir, name)
        sagemaker_env = dict(container.Environment)
        if container.Mode is ContainerMode.MULTI_MODEL:
            sagemaker_env["SAGEMAKER_MULTI_MODEL"] = "true"
        model_dir = fetched[index].model_dir
        prepare = command(launch.Prepare, document_dir) if launch.Prepare else None
        log_path = inside(run_dir, f"{name}.log")
        found = layout.addresses(backend.Protocol, ports)
        served[index] = backend.model_copy(update={"Url": found.url, "ManagementUrl": found.management_url})
        if launch.Runtime == "docker":
            if model_dir is not None:
                model_dir = _own_copy(model_dir, container_dir)
            mounts = [] if model_dir is None else [(model_dir.resolve(), docker.MODEL_DIR, True)]
            if container.Mode is ContainerMode.MULTI_MODEL:  # loaded from the gateway's cache, same path
                cache = inside(model_cache or run_dir / "models", name).resolve()
                cache.mkdir(parents=True, exist_ok=True)
                mounts.append((cache, str(cache), True))
            planned, isolated = _docker_plan(
                ContainerPlan(index, name, [], prepare, dict(os.environ), ports, log_path),
                endpoint,
                container,
                sagemaker_env,
                mounts,
                run_dir,
                shared_network=shared_network,
            )
            plans.append(planned)
            if isolated is not None:  # reached at its address on the isolated network
                served[index] = backend.model_copy(update={"Url": isolated, "ManagementUrl": None})
            continue
        assert launch.Command is not None, "the endpoint document requires it for a native launch"
        env = {
            **os.environ,  # PATH, JAVA_HOME, ...: a native process needs its host's environment
            **sagemaker_env,
            **ports.environment(),
            "MCE_RUN_DIR": str(container_dir / "runtime"),
            "MCE_BIND_ADDRESS": "127.0.0.1",
            "MCE_PYTHON": sys.executable,
        }
        if backend.Model is not None:
            env.setdefault("MCE_MODEL_NAME", backend.Model)
        if container.Image is not None:  # what it stands in for (a framework container checks its tag)
            env["MCE_IMAGE"] = container.Image
        if model_dir is not None:
            env["MCE_MODEL_DIR"] = str(model_dir)
        if fetched[index].code_dir is not None:
            env["MCE_CODE_DIR"] = str(fetched[index].code_dir)
        plans.append(
            ContainerPlan(
                index=index,
                name=name,
                argv=command(launch.Command, document_dir),
                prepare=prepare,
                env=env,
                ports=ports,
                log_path=log_path,
            )
        )
    return endpoint.with_backends(served), plans


def _own_copy(model_dir: Path, container_dir: Path) -> Path:
    """The model folder a Docker container mounts: mce's own copy of a local folder, in the container's run
    folder, so what it sees is what was copied (symbolic links stay links, which resolve inside the
    container), never the host folder itself. An archive's unpacked folder is already mce's own."""
    if model_dir.resolve().is_relative_to(container_dir.resolve()) or not model_dir.is_dir():
        return model_dir
    copy = inside(container_dir, "model")
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(model_dir, copy, symlinks=True)
    return copy


def _docker_plan(
    planned: ContainerPlan,
    endpoint: Endpoint,
    container: Container,
    env: dict[str, str],
    mounts: list[tuple[Path, str, bool]],
    run_dir: Path,
    *,
    shared_network: bool,
) -> tuple[ContainerPlan, str | None]:
    """`docker run` of the container's image, as SageMaker runs it, and the URL it is reached at when it
    runs isolated. One container serves on 8080; in a multi-container endpoint each gets
    SAGEMAKER_BIND_TO_PORT and its image must say it honours it, with the label SageMaker requires (spec
    §2.2). With EnableNetworkIsolation, it runs on an internal network with no route out (D35)."""
    assert container.Image is not None and container.Backend.Launch is not None, "the document requires it"
    try:
        image = docker.image(container.Image)
    except docker.DockerError as exc:
        raise LaunchError(f"{planned.name}: {exc}") from None
    port = docker.CONTAINER_PORT
    if shared_network:
        if not image.accepts_bind_to_port:
            raise LaunchError(
                f"{planned.name}: Your Ecr Image {image.name} does not contain required "
                f"{docker.BIND_TO_PORT_LABEL}=true Docker label(s)."
            )
        env = {**env, **planned.ports.environment()}
        port = planned.ports.bind
    instance = f"mce-{endpoint.EndpointName}-{planned.name}-{secrets.token_hex(3)}"
    try:
        isolated = docker.isolated_address() if endpoint.EnableNetworkIsolation else None
    except docker.DockerError as exc:
        raise LaunchError(f"{planned.name}: {exc}") from None
    planned.argv = docker.run_argv(
        name=instance,
        image=image.name,
        args=container.Backend.Launch.Command or ["serve"],
        hostname=planned.name,
        env=env,
        publish=(planned.ports.bind, port),
        mounts=mounts,
        run_dir=run_dir.resolve(),
        isolated=isolated,
        memory=memory_bytes(limit) if (limit := _memory_limit(container)) is not None else None,
    )
    planned.cleanup = docker.remove_argv(instance)
    planned.measurable = False
    return planned, None if isolated is None else f"http://{isolated}:{port}"


def _memory_limit(container: Container) -> str | None:
    resources = container.Backend.Resources
    return resources.MemoryLimit if resources is not None else None


def command(argv: list[str], base: Path) -> list[str]:
    """A leading `python` is this interpreter; arguments naming files next to the document become absolute."""
    resolved = [
        sys.executable if i == 0 and arg in ("python", "python3") else arg for i, arg in enumerate(argv)
    ]
    return [str((base / arg).resolve()) if _names_a_file(base, arg) else arg for arg in resolved]


def _names_a_file(base: Path, arg: str) -> bool:
    """Whether `arg` is a relative path to something next to the document; an argument no file could be
    named by (too long, say a `python -c` program) is not one."""
    if os.path.isabs(arg) or "\0" in arg:
        return False
    try:
        return (base / arg).exists()
    except OSError:  # ENAMETOOLONG and the like: no such file
        return False


def _prefixed(say: Say | None, name: str) -> Say:
    """`say`, each line prefixed with the container's name (nothing, without a `say`)."""

    def said(line: str) -> None:
        if say is not None:
            say(f"{name}: {line}")

    return said
