"""The Open Inference Protocol's HTTP body and its gRPC messages, both ways (numpy does the packing).

The HTTP side is what Triton's HTTP API takes and gives: a JSON document (`{"inputs": [{"name", "shape",
"datatype", "data"}], "outputs": [...], "parameters": {...}}`), or, with the binary tensor extension, that
JSON followed by raw tensor bytes, the JSON's length given separately (SageMaker's content type
`application/vnd.sagemaker-triton.binary+json;json-header-size=N`). `infer_request` makes the gRPC
`ModelInferRequest` of such a body (every input as raw contents); `answer_body` turns the
`ModelInferResponse` back into the body Triton's HTTP API would have answered, binary outputs where the
request asked for them. So a client gets the same answer from `kserve-v2-grpc` as from `kserve-v2-rest`.

What cannot be converted is a `TensorError`, worded as the server's own errors are; the backend answers it
as the server would (400, `{"error": ...}`).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway._proto.kserve import inference_pb2 as pb
from gateway.backends.base import TensorError

BINARY_CONTENT_TYPE = b"application/vnd.sagemaker-triton.binary+json"
_HEADER_SIZE = re.compile(rb";\s*json-header-size=(\d+)\s*(?:;|$)")

_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
# Where typed (non-raw) contents of each datatype sit in InferTensorContents.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True, slots=True)
class Outputs:
    """Which outputs the request wants as binary data in the answer."""

    binary: frozenset[str]  # outputs asked for with binary_data: true
    as_json: frozenset[str]  # with binary_data: false
    default_binary: bool  # the request's binary_data_output

    def wants_binary(self, name: str) -> bool:
        return name in self.binary or (self.default_binary and name not in self.as_json)


def is_binary(content_type: bytes | None) -> bool:
    """Is this SageMaker's binary tensor content type (whatever its parameters)?"""
    return content_type is not None and content_type.lower().startswith(BINARY_CONTENT_TYPE)


def json_header_size(content_type: bytes | None, body: bytes) -> int | None:
    """N of `application/vnd.sagemaker-triton.binary+json;json-header-size=N`, checked against the
    body it frames; None for another type. Raises `TensorError` for the binary type without a size the
    body can have."""
    if content_type is None or not is_binary(content_type):
        return None
    found = _HEADER_SIZE.search(content_type)
    if found is None:
        raise TensorError(
            "content type application/vnd.sagemaker-triton.binary+json needs json-header-size=N: the "
            "length of the JSON part"
        )
    size = int(found.group(1))
    if size > len(body):
        raise TensorError(f"json-header-size {size} is larger than the body ({len(body)} bytes)")
    return size


def binary_content_type(header_size: int) -> bytes:
    return BINARY_CONTENT_TYPE + b";json-header-size=" + str(header_size).encode()


def infer_request(
    body: bytes, header_size: int | None, model: str, version: str
) -> tuple[pb.ModelInferRequest, Outputs]:
    """The gRPC request for an HTTP inference body (`header_size`: json_header_size's); also which
    outputs the answer gives as binary."""
    header, tail = (body, b"") if header_size is None else (body[:header_size], body[header_size:])
    document = _document(header)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("the request must have a non-empty 'inputs' array")
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    if "id" in document:
        if not isinstance(document["id"], str):
            raise TensorError("'id' must be a string")
        request.id = document["id"]
    default_binary = _set_parameters(request.parameters, document.get("parameters"), "the request")
    offset = 0
    for index, tensor in enumerate(inputs):
        raw, offset = _input(request, tensor, index, tail, offset)
        request.raw_input_contents.append(raw)
    if offset != len(tail):
        raise TensorError(
            f"the body has {len(tail) - offset} bytes after its inputs' binary data (binary_data_size)"
        )
    binary, as_json = set(), set()
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list):
        raise TensorError("'outputs' must be an array")
    for tensor in outputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise TensorError("each requested output must be an object with a 'name'")
        name, parameters = tensor["name"], tensor.get("parameters")
        wanted = request.outputs.add(name=name)
        if _set_parameters(wanted.parameters, parameters, f"output '{name}'"):
            binary.add(name)
        elif isinstance(parameters, dict) and parameters.get("binary_data") is False:
            as_json.add(name)
    return request, Outputs(frozenset(binary), frozenset(as_json), default_binary)


def answer_body(response: pb.ModelInferResponse, outputs: Outputs) -> tuple[bytes, int | None]:
    """The HTTP answer for a gRPC response: (body, JSON header size when it carries binary data)."""
    document: dict[str, object] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = _parameters_json(response.parameters)
    answers: list[dict[str, object]] = []
    tail: list[bytes] = []
    for index, tensor in enumerate(response.outputs):
        answer: dict[str, object] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters = _parameters_json(tensor.parameters) if tensor.parameters else {}
        raw = response.raw_output_contents[index] if index < len(response.raw_output_contents) else None
        if outputs.wants_binary(tensor.name):
            data = raw if raw is not None else _raw_from_contents(tensor)
            parameters["binary_data_size"] = len(data)
            tail.append(data)
        else:
            answer["data"] = _values(tensor, raw)
        if parameters:
            answer["parameters"] = parameters
        answers.append(answer)
    document["outputs"] = answers
    header = json.dumps(document, separators=(",", ":")).encode()
    if not tail:
        return header, None
    return b"".join([header, *tail]), len(header)


def _document(header: bytes) -> dict[str, Any]:
    try:
        document = json.loads(header.decode("utf-8"))  # not json.loads(bytes): it guesses UTF-16 from NULs
    except UnicodeDecodeError:
        raise TensorError("failed to parse the request JSON: it is not UTF-8 text") from None
    except ValueError as exc:
        raise TensorError(f"failed to parse the request JSON: {exc}") from None
    if not isinstance(document, dict):
        raise TensorError("the request JSON must be an object")
    return document


def _set_parameters(target: Any, parameters: object, what: str) -> bool:
    """Copy JSON parameters into an InferParameter map; returns the HTTP-only binary flag they hold
    (`binary_data_output` of a request, `binary_data` of an output), which gRPC does not carry."""
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        raise TensorError(f"'parameters' of {what} must be an object")
    binary = False
    for key, value in parameters.items():
        if key in ("binary_data_output", "binary_data"):
            if not isinstance(value, bool):
                raise TensorError(f"parameter '{key}' of {what} must be true or false")
            binary = value
        elif key in ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"):
            raise TensorError(f"{what} uses shared memory, which a server cannot share through the gateway")
        elif isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**64:
                raise TensorError(f"parameter '{key}' of {what} is out of the 64-bit range")
            if value < 2**63:
                target[key].int64_param = value
            else:
                target[key].uint64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        elif isinstance(value, str):
            target[key].string_param = value
        else:
            raise TensorError(f"parameter '{key}' of {what} must be a boolean, number or string")
    return binary


def _input(
    request: pb.ModelInferRequest, tensor: object, index: int, tail: bytes, offset: int
) -> tuple[bytes, int]:
    """Add input `index` to the request; its raw contents, and where the binary tail goes on."""
    if not isinstance(tensor, dict):
        raise TensorError(f"input {index} must be an object")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str):
        raise TensorError(f"input {index} needs a 'name'")
    if not isinstance(datatype, str):
        raise TensorError(f"input '{name}' needs a 'datatype'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise TensorError(f"input '{name}' needs a 'shape': an array of integers")
    added = request.inputs.add(name=name, datatype=datatype, shape=shape)
    parameters = tensor.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if isinstance(parameters, dict):
        rest = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        _set_parameters(added.parameters, rest, f"input '{name}'")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TensorError(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(tail):
            raise TensorError(
                f"input '{name}': binary_data_size {size} runs past the end of the body's binary data"
            )
        if "data" in tensor:
            raise TensorError(f"input '{name}' has both 'data' and binary data")
        return tail[offset : offset + size], offset + size
    if "data" not in tensor:
        raise TensorError(f"input '{name}' has neither 'data' nor binary data (binary_data_size)")
    return _raw(tensor["data"], datatype, shape, name), offset


def _raw(data: object, datatype: str, shape: list[int], name: str) -> bytes:
    """JSON tensor data as the protocol's raw bytes: little-endian values, BYTES length-prefixed."""
    count = 1
    for size in shape:
        count *= size
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else np.asarray([data])
        if flat.size != count:
            raise TensorError(
                f"input '{name}': 'data' has {flat.size} elements, its shape {shape} needs {count}"
            )
        parts: list[bytes] = []
        for item in flat:
            if not isinstance(item, str):
                raise TensorError(f"input '{name}': BYTES data must be strings")
            encoded = item.encode("utf-8")
            parts += (struct.pack("<I", len(encoded)), encoded)
        return b"".join(parts)
    numpy_type = _NUMPY.get(datatype)
    if numpy_type is None:
        raise TensorError(f"input '{name}': datatype '{datatype}' cannot be given as JSON data")
    try:
        array = np.asarray(data, dtype=numpy_type)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TensorError(f"input '{name}': 'data' cannot be read as {datatype}: {exc}") from None
    if array.size != count:
        raise TensorError(
            f"input '{name}': 'data' has {array.size} elements, its shape {shape} needs {count}"
        )
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _values(tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None) -> list[object]:
    """An output's values as the flat JSON array Triton's HTTP API answers."""
    if raw is None:
        if tensor.datatype == "BYTES":
            return [v.decode("utf-8", "replace") for v in tensor.contents.bytes_contents]
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise TensorError(f"output '{tensor.name}': datatype {tensor.datatype} has no JSON form")
        return [v for v in getattr(tensor.contents, field)]
    if tensor.datatype == "BYTES":
        return [item.decode("utf-8", "replace") for item in _split_bytes(raw, tensor.name)]
    numpy_type = _NUMPY.get(tensor.datatype)
    if numpy_type is None:
        raise TensorError(f"output '{tensor.name}': datatype {tensor.datatype} has no JSON form")
    values: list[object] = np.frombuffer(raw, dtype=np.dtype(numpy_type).newbyteorder("<")).tolist()
    return values


def _raw_from_contents(tensor: pb.ModelInferResponse.InferOutputTensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in tensor.contents.bytes_contents)
    field = _CONTENTS_FIELD.get(tensor.datatype)
    numpy_type = _NUMPY.get(tensor.datatype)
    if field is None or numpy_type is None:
        raise TensorError(f"output '{tensor.name}': datatype {tensor.datatype} has no typed contents")
    values = np.asarray(list(getattr(tensor.contents, field)), dtype=numpy_type)
    return values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def _split_bytes(raw: bytes, name: str) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError(f"output '{name}': BYTES data is cut short")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset : offset + size])
        offset += size
    if offset != len(raw):
        raise TensorError(f"output '{name}': BYTES data is cut short")
    return items


def _parameters_json(parameters: Mapping[str, pb.InferParameter]) -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if kind is not None:
            found[key] = getattr(value, kind)
    return found
