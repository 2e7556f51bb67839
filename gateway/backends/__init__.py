"""Where a request leaves the gateway: one backend per container, one module per protocol.

`build_backend` is the one place a protocol name becomes code; a new protocol adds a module and a line
in `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.backends.base import Backend, BufferedReply, Reply, ReplyTooLarge
from gateway.backends.sagemaker import SageMakerBackend
from gateway.endpoint import BackendProtocol, BackendSpec

__all__ = ["Backend", "BufferedReply", "Reply", "ReplyTooLarge", "build_backend"]

_FACTORIES: dict[BackendProtocol, Callable[[str, BackendSpec], Backend]] = {
    BackendProtocol.SAGEMAKER: SageMakerBackend,
}


def build_backend(name: str, spec: BackendSpec) -> Backend:
    """The backend for container `name`, as its `Backend` section describes it."""
    return _FACTORIES[spec.Protocol](name, spec)
