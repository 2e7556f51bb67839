"""Where a request leaves the gateway: one backend per container, one module per protocol.

`build_backend` is the one place a protocol name becomes code; a new protocol adds a module and a line in
`_MODULES`. Modules are imported on first use, so an endpoint without gRPC containers never loads grpc.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from gateway.backends.base import Backend, BufferedReply, Reply
from gateway.endpoint import BackendProtocol, BackendSpec
from gateway.upstream import BodyTooLarge

__all__ = ["Backend", "BodyTooLarge", "BufferedReply", "Reply", "build_backend"]

_MODULES: dict[BackendProtocol, tuple[str, str]] = {
    BackendProtocol.SAGEMAKER: ("gateway.backends.sagemaker", "SageMakerBackend"),
    BackendProtocol.TORCHSERVE_REST: ("gateway.backends.torchserve", "TorchServeRestBackend"),
    BackendProtocol.TORCHSERVE_GRPC: ("gateway.backends.torchserve", "TorchServeGrpcBackend"),
    BackendProtocol.TFSERVING_REST: ("gateway.backends.tfserving", "TfServingRestBackend"),
    BackendProtocol.TFSERVING_GRPC: ("gateway.backends.tfserving", "TfServingGrpcBackend"),
    BackendProtocol.KSERVE_V2_REST: ("gateway.backends.kserve", "KServeRestBackend"),
    BackendProtocol.KSERVE_V2_GRPC: ("gateway.backends.kserve", "KServeGrpcBackend"),
}


def build_backend(name: str, spec: BackendSpec) -> Backend:
    """The backend for container `name`, as its `Backend` section describes it."""
    module, cls = _MODULES[spec.Protocol]
    factory: Callable[[str, BackendSpec], Backend] = getattr(importlib.import_module(module), cls)
    return factory(name, spec)
