"""How `mce up` will start each container natively, as SageMaker would: decided before anything starts.

Per container without a `Backend.Url`: a port allocation (SAGEMAKER_BIND_TO_PORT, SAGEMAKER_SAFE_PORT_RANGE),
its model data made local (a MultiModel container's models are the gateway's to load, gateway.multimodel),
its `Environment`, SAGEMAKER_MULTI_MODEL when it is a MultiModel container, and its `Launch.Command` (and
`Prepare`), with paths next to the endpoint document made absolute. The endpoint comes back with each
launched container's address filled in, for the data plane.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.endpoint import BackendSpec, ContainerMode, Endpoint
from gateway.launch import layout
from gateway.launch.modeldata import ModelDataError, model_directory
from gateway.launch.ports import PortAllocation, allocate


class LaunchError(Exception):
    """A container cannot be planned or started; the message names it and says what to do."""


@dataclass
class ContainerPlan:
    """Everything it takes to start one container natively."""

    index: int
    name: str
    argv: list[str]
    prepare: list[str] | None
    env: dict[str, str]
    ports: PortAllocation
    log_path: Path


def plan(
    endpoint: Endpoint, document_dir: Path, run_dir: Path, *, taken_ports: set[int]
) -> tuple[Endpoint, list[ContainerPlan]]:
    """The endpoint as it will be served (launched containers' addresses filled in) and how to launch them."""
    plans: list[ContainerPlan] = []
    served: dict[int, BackendSpec] = {}
    taken = set(taken_ports)
    for index, container in enumerate(endpoint.containers):
        backend = container.Backend
        name = endpoint.hostname(index)
        if backend.Url is not None:
            continue
        if backend.Launch is None:
            raise LaunchError(
                f"{name}: Backend has neither Url (a running container) nor Launch.Command (how to start it)"
            )
        ports = allocate(taken=taken)
        taken.update(range(ports.bind, ports.last + 1))
        container_dir = run_dir / name
        env = {
            **os.environ,  # PATH, JAVA_HOME, ...: a native process needs its host's environment
            **container.Environment,
            **ports.environment(),
            "MCE_RUN_DIR": str(container_dir / "runtime"),
            "MCE_BIND_ADDRESS": "127.0.0.1",
            "MCE_PYTHON": sys.executable,
        }
        if container.Mode is ContainerMode.MULTI_MODEL:
            env["SAGEMAKER_MULTI_MODEL"] = "true"
        if backend.Model is not None:
            env.setdefault("MCE_MODEL_NAME", backend.Model)
        if container.ModelDataUrl is not None and container.Mode is not ContainerMode.MULTI_MODEL:
            try:
                env["MCE_MODEL_DIR"] = str(
                    model_directory(container.ModelDataUrl, document_dir, container_dir)
                )
            except ModelDataError as exc:
                if backend.Launch.Prepare is None:  # a Prepare step may be what builds it
                    raise LaunchError(f"{name}: {exc}") from None
                env["MCE_MODEL_DIR"] = str((document_dir / container.ModelDataUrl).resolve())
        found = layout.addresses(backend.Protocol, ports)
        served[index] = backend.model_copy(update={"Url": found.url, "ManagementUrl": found.management_url})
        plans.append(
            ContainerPlan(
                index=index,
                name=name,
                argv=command(backend.Launch.Command, document_dir),
                prepare=command(backend.Launch.Prepare, document_dir) if backend.Launch.Prepare else None,
                env=env,
                ports=ports,
                log_path=run_dir / f"{name}.log",
            )
        )
    return endpoint.with_backends(served), plans


def command(argv: list[str], base: Path) -> list[str]:
    """A leading `python` is this interpreter; arguments naming files next to the document become absolute."""
    resolved = [
        sys.executable if i == 0 and arg in ("python", "python3") else arg for i, arg in enumerate(argv)
    ]
    return [
        str((base / arg).resolve()) if not os.path.isabs(arg) and (base / arg).exists() else arg
        for arg in resolved
    ]
