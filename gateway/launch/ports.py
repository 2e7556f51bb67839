"""Port allocations as SageMaker makes them: one port to serve on, and a safe range for extra ports."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

RANGE_SIZE = 16  # extra ports per container; TorchServe needs 4, TF Serving 1
_LOW, _HIGH = 20000, 32000  # below Linux's default ephemeral range (32768-60999)
_ATTEMPTS = 200


@dataclass(frozen=True, slots=True)
class PortAllocation:
    """`bind`: the container's SAGEMAKER_BIND_TO_PORT; `first..last`: its SAGEMAKER_SAFE_PORT_RANGE."""

    bind: int
    first: int
    last: int

    def extra(self, index: int) -> int:
        """The `index`-th port of the safe range."""
        port = self.first + index
        if port > self.last:
            raise IndexError(f"the safe range {self.first}-{self.last} has no port {index}")
        return port

    def environment(self) -> dict[str, str]:
        return {
            "SAGEMAKER_BIND_TO_PORT": str(self.bind),
            "SAGEMAKER_SAFE_PORT_RANGE": f"{self.first}-{self.last}",
        }


def allocate(
    host: str = "127.0.0.1", extra: int = RANGE_SIZE, taken: set[int] | None = None
) -> PortAllocation:
    """A free port and a free contiguous range of `extra` ports after it, probed by binding each one.

    Free now is not free forever; a container that loses the race fails to start with a clear message.
    """
    taken = taken or set()
    for _ in range(_ATTEMPTS):
        base = random.randrange(_LOW, _HIGH - extra - 1)
        block = range(base, base + extra + 1)
        if not taken.intersection(block) and all(port_free(host, port) for port in block):
            return PortAllocation(bind=base, first=base + 1, last=base + extra)
    raise OSError(f"no block of {extra + 1} free ports found on {host} between {_LOW} and {_HIGH}")


def port_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now (with SO_REUSEADDR, as the gateway and most servers bind)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
