"""TF Serving, natively: `tfserving-rest` (POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict) and
`tfserving-grpc`.

REST passes the client's JSON through, as the SageMaker TF Serving container does. gRPC converts the same
JSON to a PredictRequest (input names and dtypes from the model's signature, asked of GetModelMetadata
once and kept) and the PredictResponse back to TF Serving's JSON, so either protocol gives the client the
same answer. Ready means a model version is AVAILABLE (REST `GET /v1/models/{m}`, gRPC GetModelStatus).
"""

from __future__ import annotations

import json

import grpc

from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from gateway.backends import grpc_channel, tensors
from gateway.backends.base import HEALTH_TIMEOUT, BufferedReply, TensorError, error_status
from gateway.backends.http import SingleExchangeBackend
from gateway.endpoint import BackendSpec
from gateway.errors import ModelError
from gateway.invocation import Invocation

DEFAULT_SIGNATURE = "serving_default"
_JSON = b"application/json"
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def model_path(spec: BackendSpec) -> str:
    """`/v1/models/{m}[/versions/{v}|/labels/{l}]`."""
    path = f"/v1/models/{spec.Model}"
    if spec.ModelVersion is not None:
        return f"{path}/versions/{spec.ModelVersion}"
    if spec.ModelLabel is not None:
        return f"{path}/labels/{spec.ModelLabel}"
    return path


class TfServingRestBackend(SingleExchangeBackend):
    """The client's JSON to `:predict` on TF Serving's REST port."""

    def __init__(self, name: str, spec: BackendSpec) -> None:
        self.model = spec.Model
        path = model_path(spec)
        super().__init__(name, spec, invocations_path=f"{path}:predict".encode())
        self._status_request = self.server.get_request(path.encode())

    async def check_health(self) -> str | None:
        answer = await self.server.probe(self._status_request, f"GET /v1/models/{self.model}")
        if isinstance(answer, str):
            return answer
        status, body = answer
        text = body[:300].decode("utf-8", "replace")
        if status != 200:
            return f"model {self.model}: TF Serving answered {status}: {text}"
        try:
            states = [v.get("state") for v in json.loads(body)["model_version_status"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"model {self.model}: TF Serving's status answer is not a model status: {text}"
        return (
            None
            if "AVAILABLE" in states
            else f"model {self.model} has no AVAILABLE version (states: {states})"
        )


class TfServingGrpcBackend:
    """`PredictionService/Predict`, converting TF Serving's JSON to tensors and back."""

    def __init__(self, name: str, spec: BackendSpec) -> None:
        if spec.Url is None or spec.Model is None:
            raise ValueError(f"container {name} needs Backend.Url and Backend.Model")
        self.name = name
        self.address = grpc_channel.target(spec.Url)
        self.model = spec.Model
        self._spec = model_pb2.ModelSpec(name=spec.Model)
        if spec.ModelVersion is not None:
            self._spec.version.value = int(spec.ModelVersion)
        elif spec.ModelLabel is not None:
            self._spec.version_label = spec.ModelLabel
        self._default_signature = spec.SignatureName or DEFAULT_SIGNATURE
        self._timeout = spec.InvocationTimeoutInSeconds
        self._signatures: dict[str, tensors.Signature] = {}
        self._channel: grpc.aio.Channel | None = None
        self._predict: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        self._status: model_service_pb2_grpc.ModelServiceStub | None = None

    async def start(self) -> None:
        self._channel = grpc_channel.open_channel(self.address)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def invoke(self, call: Invocation) -> BufferedReply:
        assert self._predict is not None, "start() first"
        try:
            document = json.loads(
                call.body.decode("utf-8")
            )  # not json.loads(bytes): it guesses UTF-16 from NULs
        except UnicodeDecodeError:
            raise self._bad_request("JSON Parse error: the body is not UTF-8 text (JSON expected)") from None
        except ValueError as exc:
            raise self._bad_request(f"JSON Parse error: {exc}") from None
        signature_name = self._default_signature
        if isinstance(document, dict) and isinstance(document.get("signature_name"), str):
            signature_name = document["signature_name"]
        inputs = await self._signature(signature_name)
        try:
            tensor_inputs, rows = tensors.request_tensors(document, inputs)
        except TensorError as exc:
            raise self._bad_request(str(exc)) from None
        request = predict_pb2.PredictRequest(inputs=tensor_inputs)
        request.model_spec.CopyFrom(self._spec)
        request.model_spec.signature_name = signature_name
        try:
            response = await self._predict.Predict(
                request, timeout=self._timeout, metadata=grpc_channel.metadata(call)
            )
        except grpc.aio.AioRpcError as error:
            raise grpc_channel.failure(self.name, self.address, error, self._timeout) from error
        try:
            answer = tensors.answer_document(response.outputs, rows)
        except TensorError as exc:
            raise self._bad_request(str(exc), status=500) from None
        return BufferedReply(json.dumps(answer).encode(), _JSON)

    async def check_health(self) -> str | None:
        assert self._status is not None, "start() first"
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(self._spec)
        try:
            response = await self._status.GetModelStatus(request, timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return grpc_channel.health_failure(self.address, error)
        states = [status.state for status in response.model_version_status]
        if _AVAILABLE in states:
            return None
        names = [get_model_status_pb2.ModelVersionStatus.State.Name(s) for s in states]
        return f"model {self.model} has no AVAILABLE version (states: {names})"

    async def _signature(self, name: str) -> tensors.Signature:
        """The signature's inputs, from GetModelMetadata the first time it is used."""
        known = self._signatures.get(name)
        if known is not None:
            return known
        assert self._predict is not None
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(self._spec)
        try:
            response = await self._predict.GetModelMetadata(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise grpc_channel.failure(self.name, self.address, error, self._timeout) from error
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signatures):
            raise self._bad_request("the model's metadata holds no signature_def", status=500)
        for key, signature in signatures.signature_def.items():
            self._signatures[key] = dict(signature.inputs)
        found = self._signatures.get(name)
        if found is None:
            raise self._bad_request(f'Serving signature name: "{name}" not found in signature def')
        return found

    def _bad_request(self, message: str, status: int = 400) -> ModelError:
        # What TF Serving's REST API answers for the same request, so both protocols read alike.
        return error_status(self.name, status, json.dumps({"error": message}).encode())
