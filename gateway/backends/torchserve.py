"""TorchServe, natively: `torchserve-rest` (POST /predictions/{model}[/{version}]) and `torchserve-grpc`.

TorchServe answers /ping Healthy before its model's worker can serve (shared/spec/backends.md), so a
TorchServe container is ready only when the management API (`Backend.ManagementUrl`) shows a READY
worker for the model; without a management address the server's own ping is all there is to ask.
TorchServe's errors (404 model not found, 503 worker died, 507 out of resources, the handler's own codes)
reach the client as ModelError with the original status and message.
"""

from __future__ import annotations

import json

import grpc
from google.protobuf import empty_pb2

from gateway._proto.torchserve import inference_pb2, inference_pb2_grpc
from gateway.backends import grpc_channel
from gateway.backends.base import HEALTH_TIMEOUT, BufferedReply
from gateway.backends.http import HttpAddress, SingleExchangeBackend
from gateway.endpoint import BackendSpec
from gateway.invocation import Invocation

_JSON = b"application/json"


class ModelReadiness:
    """Is the model loaded with a READY worker? Asked of TorchServe's management API."""

    def __init__(self, spec: BackendSpec) -> None:
        assert spec.Model is not None, "the endpoint rules require Model for TorchServe"
        self.model = spec.Model
        self.management = (
            HttpAddress(spec.ManagementUrl, spec.ConnectTimeoutInSeconds)
            if spec.ManagementUrl is not None
            else None
        )
        path = f"/models/{spec.Model}" + (f"/{spec.ModelVersion}" if spec.ModelVersion else "")
        self._request = self.management.get_request(path.encode()) if self.management is not None else b""

    def start(self) -> None:
        if self.management is not None:
            self.management.start()

    def close(self) -> None:
        if self.management is not None:
            self.management.close()

    async def check(self) -> str | None:
        assert self.management is not None
        answer = await self.management.probe(self._request, f"GET /models/{self.model}")
        if isinstance(answer, str):
            return answer
        status, body = answer
        if status != 200:
            return (
                f"model {self.model}: management API answered {status}: "
                f"{body[:200].decode('utf-8', 'replace')}"
            )
        try:
            described = json.loads(body)
            statuses = [w.get("status") for model in described for w in model.get("workers", [])]
        except (ValueError, TypeError, AttributeError):
            return f"model {self.model}: management API answered something that is not a model description"
        if "READY" in statuses:
            return None
        workers = ", ".join(str(s) for s in statuses) or "none"
        return f"model {self.model} has no READY worker yet (workers: {workers})"


class TorchServeRestBackend(SingleExchangeBackend):
    """`POST /predictions/{model}[/{version}]` on TorchServe's inference port."""

    def __init__(self, name: str, spec: BackendSpec) -> None:
        self.readiness = ModelReadiness(spec)
        path = f"/predictions/{self.readiness.model}" + (f"/{spec.ModelVersion}" if spec.ModelVersion else "")
        super().__init__(name, spec, invocations_path=path.encode())

    async def start(self) -> None:
        await super().start()
        self.readiness.start()

    async def close(self) -> None:
        await super().close()
        self.readiness.close()

    async def check_health(self) -> str | None:
        if self.readiness.management is None:
            return await super().check_health()
        return await self.readiness.check()


class TorchServeGrpcBackend:
    """`InferenceAPIsService.Predictions`, the request body as the handler's `data` input."""

    def __init__(self, name: str, spec: BackendSpec) -> None:
        if spec.Url is None:
            raise ValueError(f"container {name} has no Backend.Url")
        self.name = name
        self.address = grpc_channel.target(spec.Url)
        self.readiness = ModelReadiness(spec)
        self._version = spec.ModelVersion or ""
        self._timeout = spec.InvocationTimeoutInSeconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: inference_pb2_grpc.InferenceAPIsServiceStub | None = None

    async def start(self) -> None:
        self._channel = grpc_channel.open_channel(self.address)
        self._stub = inference_pb2_grpc.InferenceAPIsServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.readiness.start()

    async def close(self) -> None:
        self.readiness.close()
        if self._channel is not None:
            await self._channel.close()

    async def invoke(self, call: Invocation) -> BufferedReply:
        assert self._stub is not None, "start() first"
        request = inference_pb2.PredictionsRequest(
            model_name=self.readiness.model, model_version=self._version, input={"data": call.body}
        )
        try:
            response = await self._stub.Predictions(
                request, timeout=self._timeout, metadata=grpc_channel.metadata(call)
            )
        except grpc.aio.AioRpcError as error:
            raise grpc_channel.failure(self.name, self.address, error, self._timeout) from error
        # TorchServe's gRPC answer carries no content type; its handlers answer JSON.
        return BufferedReply(response.prediction, _JSON)

    async def check_health(self) -> str | None:
        if self.readiness.management is not None:
            return await self.readiness.check()
        assert self._stub is not None, "start() first"
        try:
            answer = await self._stub.Ping(empty_pb2.Empty(), timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return grpc_channel.health_failure(self.address, error)
        return None if "Healthy" in answer.health else f"{self.address} reports {answer.health.strip()}"
