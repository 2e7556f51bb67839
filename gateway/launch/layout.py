"""Where a container serves each protocol, given the ports SageMaker handed it.

These are the conventions of this repository's container entrypoints (containers/pytorch/serve.py,
containers/tensorflow/serve.sh, containers/triton/serve.py), which read SAGEMAKER_BIND_TO_PORT and
SAGEMAKER_SAFE_PORT_RANGE:

    sagemaker        http  bind                       (the SageMaker contract, spec §5)
    torchserve-*     REST  bind; management first; metrics first+1; gRPC first+2; gRPC management first+3
    tfserving-*      REST  bind; gRPC first
    kserve-v2-*      HTTP  bind; gRPC first; metrics first+1

Natively launched containers get a fresh allocation on 127.0.0.1; in compose each container is its own
host, named by its ContainerHostname, with the standard allocation (`COMPOSE_PORTS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.endpoint import BackendProtocol, Endpoint
from gateway.launch.ports import PortAllocation

COMPOSE_PORTS = PortAllocation(bind=8080, first=9000, last=9015)


@dataclass(frozen=True, slots=True)
class Addresses:
    url: str
    management_url: str | None = None


def addresses(protocol: BackendProtocol, ports: PortAllocation, host: str = "127.0.0.1") -> Addresses:
    http = f"http://{host}:{ports.bind}"
    if protocol is BackendProtocol.SAGEMAKER or protocol is BackendProtocol.TFSERVING_REST:
        return Addresses(http)
    if protocol is BackendProtocol.KSERVE_V2_REST:
        return Addresses(http)
    if protocol in (BackendProtocol.TFSERVING_GRPC, BackendProtocol.KSERVE_V2_GRPC):
        return Addresses(f"grpc://{host}:{ports.extra(0)}")
    management = f"http://{host}:{ports.extra(0)}"
    if protocol is BackendProtocol.TORCHSERVE_REST:
        return Addresses(http, management)
    if protocol is BackendProtocol.TORCHSERVE_GRPC:
        return Addresses(f"grpc://{host}:{ports.extra(2)}", management)
    raise ValueError(f"no port layout for protocol {protocol.value}")


def at_hostnames(endpoint: Endpoint) -> Endpoint:
    """Containers without a Url are reached at their ContainerHostname on the standard ports (compose)."""
    updates = {}
    for index, container in enumerate(endpoint.containers):
        if container.Backend.Url is None:
            found = addresses(container.Backend.Protocol, COMPOSE_PORTS, endpoint.hostname(index))
            updates[index] = container.Backend.model_copy(
                update={"Url": found.url, "ManagementUrl": found.management_url}
            )
    return endpoint.with_backends(updates)
