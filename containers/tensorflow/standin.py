"""A local stand-in for TF Serving: its REST and gRPC APIs over `tf.saved_model.load`, with real TensorFlow.

`tensorflow_model_server` cannot be installed on machines without Docker images (shared/spec/backends.md),
so `containers/tensorflow/serve.sh` runs this instead when the binary is not on PATH. It is not TF Serving:
it serves one model (the highest version under the base path), and covers

    REST  POST /v1/models/{m}[/versions/{v}]:predict   row ("instances") and columnar ("inputs") formats,
                                                        "signature_name"; answers "predictions" / "outputs"
          GET  /v1/models/{m}[/versions/{v}]            model status
          GET  /v1/models/{m}[/versions/{v}]/metadata   signature_def
    gRPC  tensorflow.serving.PredictionService/Predict, /GetModelMetadata
          tensorflow.serving.ModelService/GetModelStatus

and not classify/regress/multi-inference, version labels, batching, model config reload, b64 strings in
JSON or monitoring. Errors look like TF Serving's: REST `{"error": "..."}` with 400 (invalid argument) or
404 (not found), gRPC INVALID_ARGUMENT / NOT_FOUND. The gRPC messages are TF Serving's own, from the
official `tensorflow-serving-api` stubs.

    python standin.py --model-name mnist --model-base-path DIR/mnist --rest-port 8501 --grpc-port 8500
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

DEFAULT_SIGNATURE = "serving_default"


class ServingError(Exception):
    """A failure with TF Serving's status: NOT_FOUND (404) or INVALID_ARGUMENT (400)."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def http_status(self) -> int:
        return 404 if self.code is grpc.StatusCode.NOT_FOUND else 400


def not_found(message: str) -> ServingError:
    return ServingError(message, grpc.StatusCode.NOT_FOUND)


def invalid(message: str) -> ServingError:
    return ServingError(message, grpc.StatusCode.INVALID_ARGUMENT)


class Servable:
    """The model: its highest version under the base path, loaded once, with its signatures."""

    def __init__(self, name: str, base_path: Path) -> None:
        versions = sorted(
            int(p.name) for p in base_path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()
        )
        if not versions:
            raise SystemExit(f"standin: no <version>/saved_model.pb under {base_path}")
        self.name = name
        self.version = versions[-1]
        path = base_path / str(self.version)
        self._loaded = tf.saved_model.load(str(path))
        self.functions = dict(self._loaded.signatures)
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
        self.signature_defs = saved.meta_graphs[0].signature_def

    def check(self, name: str, version: int | None) -> None:
        if name != self.name:
            raise not_found(f"Servable not found for request: Latest({name})")
        if version is not None and version != self.version:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")

    def input_specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        function = self._function(signature)
        return dict(function.structured_input_signature[1])

    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        function = self._function(signature)
        specs = function.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise invalid(f"input names {sorted(inputs)} do not match the signature's inputs {sorted(specs)}")
        for name, value in inputs.items():
            spec = specs[name]
            if value.dtype != spec.dtype.as_numpy_dtype:
                raise invalid(
                    f"input '{name}' is {_dtype(tf.as_dtype(value.dtype))}; the signature expects "
                    f"{_dtype(spec.dtype)}"
                )
            if not spec.shape.is_compatible_with(value.shape):
                raise invalid(
                    f"input '{name}' has shape {list(value.shape)}; the signature expects "
                    f"{_shape(spec.shape)}"
                )
        try:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
        except (ValueError, TypeError) as exc:
            raise invalid(_first_line(str(exc))) from exc
        except tf.errors.OpError as exc:
            raise invalid(_first_line(exc.message)) from exc
        return {k: v.numpy() for k, v in outputs.items()}

    def _function(self, signature: str) -> Any:
        function = self.functions.get(signature)
        if function is None:
            raise invalid(f'Serving signature name: "{signature}" not found in signature def')
        return function


def _dtype(dtype: tf.DType) -> str:
    return types_pb2.DataType.Name(dtype.as_datatype_enum)


def _shape(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "invalid argument"


# REST ------------------------------------------------------------------------------------------------
_MODEL_PATH = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?:/labels/([^/:]+))?(:predict|/metadata)?$"
)


def rows_to_inputs(instances: object, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid("'instances' must be a non-empty list")
    if all(isinstance(row, dict) for row in instances):
        return {
            name: _array([row.get(name) for row in instances], spec, name) for name, spec in specs.items()
        }
    if len(specs) != 1:
        raise invalid("each instance must be an object keyed by input name: the signature has several inputs")
    ((name, spec),) = specs.items()
    return {name: _array(instances, spec, name)}


def columns_to_inputs(columns: object, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if isinstance(columns, dict):
        return {
            name: _array(value, specs[name], name) if name in specs else _unknown(name)
            for name, value in columns.items()
        }
    if len(specs) != 1:
        raise invalid("'inputs' must be an object keyed by input name: the signature has several inputs")
    ((name, spec),) = specs.items()
    return {name: _array(columns, spec, name)}


def _unknown(name: str) -> np.ndarray:
    raise invalid(f"input '{name}' is not in the signature")


def _array(value: object, spec: tf.TensorSpec, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError) as exc:
        raise invalid(
            f"input '{name}' cannot be read as {_dtype(spec.dtype)}: {_first_line(str(exc))}"
        ) from exc


def outputs_to_json(outputs: dict[str, np.ndarray], rows: bool) -> dict[str, object]:
    if rows:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        batch = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(batch)]}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values())).tolist()}
    return {"outputs": {k: v.tolist() for k, v in outputs.items()}}


def status_document(servable: Servable) -> dict[str, object]:
    return {
        "model_version_status": [
            {
                "version": str(servable.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def metadata_document(servable: Servable) -> dict[str, object]:
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signatures.signature_def[key].CopyFrom(signature)
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {
            "signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)
        },
    }


class RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this, Nagle and delayed ACKs add 40 ms
    disable_nagle_algorithm = True
    servable: Servable

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        try:
            match = self._match()
            if match.group(4) == ":predict":
                raise not_found(f"Malformed request: GET {self.path}")
            self.servable.check(match.group(1), _int(match.group(2)))
            document = metadata_document(self.servable) if match.group(4) else status_document(self.servable)
            self._send(200, document)
        except ServingError as error:
            self._send(error.http_status, {"error": error.message})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            match = self._match()
            if match.group(4) != ":predict":
                raise not_found(f"Malformed request: POST {self.path}")
            if match.group(3) is not None:
                raise invalid("version labels are not supported by the TF Serving stand-in")
            self.servable.check(match.group(1), _int(match.group(2)))
            try:
                # decoded as UTF-8 first: json.loads on bytes guesses UTF-16/32 from NUL bytes, and a
                # binary body then reads as a codec failure instead of what it is
                document = json.loads(body.decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid("JSON Parse error: the body is not UTF-8 text (JSON expected)") from None
            except ValueError as exc:
                raise invalid(f"JSON Parse error: {exc}") from None
            if not isinstance(document, dict):
                raise invalid("JSON Value: the request body must be a JSON object")
            signature = document.get("signature_name", DEFAULT_SIGNATURE)
            specs = self.servable.input_specs(signature)
            if "instances" in document:
                inputs, rows = rows_to_inputs(document["instances"], specs), True
            elif "inputs" in document:
                inputs, rows = columns_to_inputs(document["inputs"], specs), False
            else:
                raise invalid("Missing 'inputs' or 'instances' key")
            self._send(200, outputs_to_json(self.servable.predict(signature, inputs), rows))
        except ServingError as error:
            self._send(error.http_status, {"error": error.message})

    def _match(self) -> re.Match[str]:
        match = _MODEL_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            raise not_found(f"Malformed request: {self.command} {self.path}")
        return match

    def _send(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None else None


# gRPC ------------------------------------------------------------------------------------------------
def _version(spec: Any) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, servable: Servable) -> None:
        self.servable = servable

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            spec = request.model_spec
            if spec.HasField("version_label"):
                raise invalid("version labels are not supported by the TF Serving stand-in")
            self.servable.check(spec.name, _version(spec))
            signature = spec.signature_name or DEFAULT_SIGNATURE
            inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
            outputs = self.servable.predict(signature, inputs)
        except ServingError as error:
            context.abort(error.code, error.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.servable.name
        response.model_spec.version.value = self.servable.version
        response.model_spec.signature_name = signature
        wanted = set(request.output_filter) or set(outputs)
        for name, value in outputs.items():
            if name in wanted:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            self.servable.check(request.model_spec.name, _version(request.model_spec))
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid("Metadata field signature_def is the only one supported")
        except ServingError as error:
            context.abort(error.code, error.message)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.servable.signature_defs.items():
            signatures.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.servable.name
        response.model_spec.version.value = self.servable.version
        response.metadata["signature_def"].Pack(signatures)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, servable: Servable) -> None:
        self.servable = servable

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            self.servable.check(request.model_spec.name, _version(request.model_spec))
        except ServingError as error:
            context.abort(error.code, error.message)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.servable.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-base-path", type=Path, required=True)
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--grpc-port", type=int, default=8500)
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args()
    servable = Servable(args.model_name, args.model_base_path)

    rpc = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", 16 << 20)]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(servable), rpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(servable), rpc)
    if rpc.add_insecure_port(f"{args.host}:{args.grpc_port}") == 0:
        raise SystemExit(f"standin: cannot listen for gRPC on {args.host}:{args.grpc_port}")
    rpc.start()
    RestHandler.servable = servable
    rest = ThreadingHTTPServer((args.host, args.rest_port), RestHandler)
    rest.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=rest.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"TF Serving stand-in: model {servable.name} version {servable.version} AVAILABLE; "
        f"REST on {args.host}:{args.rest_port}, gRPC on {args.host}:{args.grpc_port}",
        flush=True,
    )
    rest.serve_forever()
    rpc.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
