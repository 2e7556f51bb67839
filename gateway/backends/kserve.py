"""The Open Inference Protocol (KServe v2), natively: `kserve-v2-rest` (POST
/v2/models/{m}[/versions/{v}]/infer) and `kserve-v2-grpc` (inference.GRPCInferenceService/ModelInfer).
Triton, KServe's model servers, Seldon's MLServer and OpenVINO Model Server all speak it.

The client sends the protocol's JSON inference request and gets its JSON answer, over either protocol.
Triton's binary tensor extension works as SageMaker's Triton container has it: a body of content type
`application/vnd.sagemaker-triton.binary+json;json-header-size=N` is JSON followed by raw tensor bytes,
and an answer with binary outputs comes back with that content type. Over REST the gateway only renames
the framing (Triton's HTTP API says the JSON's length in an `Inference-Header-Content-Length` header);
over gRPC it converts the body to a `ModelInferRequest` with raw tensor contents and the response back
(gateway.backends.kserve_json). Ready means the model's ready endpoint says so. The server's errors
(unknown input, wrong shape or datatype) reach the client as ModelError with its status and message.
"""

from __future__ import annotations

import dataclasses
import json

import grpc

from gateway import upstream
from gateway._proto.kserve import inference_pb2 as pb
from gateway.backends import grpc_channel, kserve_json
from gateway.backends.base import HEALTH_TIMEOUT, BufferedReply, Receiver, TensorError, error_status
from gateway.backends.http import HttpExchange, HttpReply, SingleExchangeBackend
from gateway.endpoint import BackendSpec
from gateway.errors import ModelError
from gateway.invocation import Invocation

SERVICE = "/inference.GRPCInferenceService/"
_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_HEADER_LENGTH = b"inference-header-content-length"


def model_path(spec: BackendSpec) -> str:
    """`/v2/models/{m}[/versions/{v}]`."""
    path = f"/v2/models/{spec.Model}"
    return path if spec.ModelVersion is None else f"{path}/versions/{spec.ModelVersion}"


def _error(container: str, message: str, status: int = 400) -> ModelError:
    """What Triton answers for a request it cannot read, so the gateway's own refusals read alike."""
    return error_status(container, status, json.dumps({"error": message}).encode())


class KServeReply(HttpReply):
    """Triton's binary answer (its JSON's length in Inference-Header-Content-Length) under SageMaker's
    binary content type."""

    __slots__ = ()

    @property
    def content_type(self) -> bytes | None:
        headers = self._response.headers
        size = headers.get(_HEADER_LENGTH)
        if size is not None and size.isdigit():
            return kserve_json.binary_content_type(int(size))
        return headers.get(b"content-type")


class KServeRestBackend(SingleExchangeBackend):
    """The client's body to `/v2/models/{m}/infer`; health from `/v2/models/{m}/ready`."""

    def __init__(self, name: str, spec: BackendSpec) -> None:
        self.model = spec.Model
        path = model_path(spec)
        super().__init__(name, spec, invocations_path=f"{path}/infer".encode())
        self._ready_request = self.server.get_request(f"{path}/ready".encode())

    def begin(self, call: Invocation, receiver: Receiver, limit: int) -> HttpExchange | None:
        if kserve_json.is_binary(call.content_type):
            return None  # the framing is checked on the coroutine path, where it can fail
        return super().begin(call, receiver, limit)

    async def invoke(self, call: Invocation) -> HttpReply:
        try:
            return await super().invoke(call)
        except TensorError as exc:  # the binary framing, checked by request_bytes
            raise _error(self.name, str(exc)) from None

    def request_bytes(self, call: Invocation, head: bytes | None = None) -> bytes | list[bytes]:
        """SageMaker's binary framing (its JSON's length in the content type) as Triton's own: the
        length in Inference-Header-Content-Length, the body as octets. Raises `TensorError`."""
        size = kserve_json.json_header_size(call.content_type, call.body)
        if size is None:
            return super().request_bytes(call, head)
        framed = dataclasses.replace(call, content_type=_OCTETS)
        length = b"Inference-Header-Content-Length: " + str(size).encode() + b"\r\n"
        return super().request_bytes(framed, (head or self._invoke_head) + length)

    def reply(self, response: upstream.Response) -> HttpReply:
        return KServeReply(response, self)

    async def check_health(self) -> str | None:
        answer = await self.server.probe(self._ready_request, f"GET /v2/models/{self.model}/ready")
        if isinstance(answer, str):
            return answer
        status, body = answer
        if status == 200:
            return None
        return f"model {self.model} is not ready ({status}: {body[:200].decode('utf-8', 'replace')})"


class KServeGrpcBackend:
    """`ModelInfer`, converting the protocol's JSON (and binary framing) to tensors and back."""

    def __init__(self, name: str, spec: BackendSpec) -> None:
        if spec.Url is None or spec.Model is None:
            raise ValueError(f"container {name} needs Backend.Url and Backend.Model")
        self.name = name
        self.address = grpc_channel.target(spec.Url)
        self.model = spec.Model
        self._version = spec.ModelVersion or ""
        self._timeout = spec.InvocationTimeoutInSeconds
        self._channel: grpc.aio.Channel | None = None
        self._infer: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._ready: grpc.aio.UnaryUnaryMultiCallable | None = None

    async def start(self) -> None:
        self._channel = channel = grpc_channel.open_channel(self.address)
        self._infer = channel.unary_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        self._ready = channel.unary_unary(
            SERVICE + "ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def invoke(self, call: Invocation) -> BufferedReply:
        assert self._infer is not None, "start() first"
        try:
            size = kserve_json.json_header_size(call.content_type, call.body)
            request, outputs = kserve_json.infer_request(call.body, size, self.model, self._version)
        except TensorError as exc:
            raise _error(self.name, str(exc)) from None
        timeout = call.timeout or self._timeout
        try:
            response = await self._infer(request, timeout=timeout, metadata=grpc_channel.metadata(call))
        except grpc.aio.AioRpcError as error:
            raise grpc_channel.failure(self.name, self.address, error, timeout, _error_body) from error
        try:
            body, header_size = kserve_json.answer_body(response, outputs)
        except TensorError as exc:
            raise _error(self.name, str(exc), status=500) from None
        if header_size is None:
            return BufferedReply(body, _JSON)
        return BufferedReply(body, kserve_json.binary_content_type(header_size))

    async def check_health(self) -> str | None:
        assert self._ready is not None, "start() first"
        request = pb.ModelReadyRequest(name=self.model, version=self._version)
        try:
            response = await self._ready(request, timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return grpc_channel.health_failure(self.address, error)
        return None if response.ready else f"model {self.model} is not ready"


def _error_body(code: grpc.StatusCode, details: str) -> bytes:
    """A gRPC failure's body as the server's HTTP API words it: `{"error": details}`."""
    return json.dumps({"error": details}).encode()
