"""TF Serving's JSON and its TensorProtos, both ways, for the common dtypes (numpy does the packing).

The JSON side is TF Serving's REST API: a request is row format (`{"instances": [...]}`) or columnar
(`{"inputs": ...}`), an answer `{"predictions": [...]}` or `{"outputs": ...}`, so a client sees the same
answer from `tfserving-grpc` as from `tfserving-rest`. What cannot be converted is a `TensorError` with a
message in TF Serving's words; the backend reports it as TF Serving would (400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from gateway._proto.tensorflow.core.protobuf import meta_graph_pb2
from gateway.backends.base import TensorError

_NUMPY: dict[int, Any] = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_HALF: np.float16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
}
# Where each dtype's values sit in a TensorProto that has no tensor_content.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
}


Signature = Mapping[str, meta_graph_pb2.TensorInfo]


def request_tensors(document: object, inputs: Signature) -> tuple[dict[str, tensor_pb2.TensorProto], bool]:
    """The tensors of a TF Serving JSON request; also whether it was row format (answered as such)."""
    if not isinstance(document, dict):
        raise TensorError("JSON Value: the request body must be a JSON object")
    if "instances" in document:
        return _rows(document["instances"], inputs), True
    if "inputs" in document:
        return _columns(document["inputs"], inputs), False
    raise TensorError("Missing 'inputs' or 'instances' key")


def answer_document(outputs: Mapping[str, tensor_pb2.TensorProto], rows: bool) -> dict[str, object]:
    """TF Serving's JSON answer for the output tensors."""
    arrays = {name: to_array(tensor) for name, tensor in outputs.items()}
    if rows:
        if len(arrays) == 1:
            return {"predictions": _json(next(iter(arrays.values())))}
        batch = len(next(iter(arrays.values())))
        return {"predictions": [{k: _json(v[i]) for k, v in arrays.items()} for i in range(batch)]}
    if len(arrays) == 1:
        return {"outputs": _json(next(iter(arrays.values())))}
    return {"outputs": {k: _json(v) for k, v in arrays.items()}}


def to_tensor(value: object, dtype: int, name: str) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=dtype)  # type: ignore[arg-type]
    if dtype == types_pb2.DT_STRING:
        array = np.asarray(value, dtype=object)
        flat = [item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1)]
        tensor.string_val.extend(flat)
    else:
        numpy_type = _NUMPY.get(dtype)
        if numpy_type is None:
            raise TensorError(
                f"input '{name}': dtype {types_pb2.DataType.Name(dtype)} is not supported by the gateway"
            )
        try:
            array = np.asarray(value, dtype=numpy_type)
        except (ValueError, TypeError, OverflowError) as exc:
            raise TensorError(
                f"input '{name}' cannot be read as {types_pb2.DataType.Name(dtype)}: {exc}"
            ) from None
        tensor.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def to_array(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.dtype == types_pb2.DT_STRING:
        strings = [v.decode("utf-8", "replace") for v in tensor.string_val]
        return np.array(strings, dtype=object).reshape(shape)
    numpy_type = _NUMPY.get(tensor.dtype)
    if numpy_type is None:
        raise TensorError(
            f"output dtype {types_pb2.DataType.Name(tensor.dtype)} is not supported by the gateway"
        )
    little = np.dtype(numpy_type).newbyteorder("<")
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=little).reshape(shape)
    values: np.ndarray
    if tensor.dtype == types_pb2.DT_HALF:
        values = np.asarray(tensor.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(getattr(tensor, _VALUE_FIELD[tensor.dtype]), dtype=numpy_type)
    count = int(np.prod(shape)) if shape else 1
    if values.size == 1 and count != 1:  # TF repeats a single value over the whole tensor
        return np.full(shape, values[0], dtype=numpy_type)
    return values.reshape(shape)


def _rows(instances: object, inputs: Signature) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances, list) or not instances:
        raise TensorError("'instances' must be a non-empty list")
    if all(isinstance(row, dict) for row in instances):
        return {
            name: to_tensor([row.get(name) for row in instances], info.dtype, name)
            for name, info in inputs.items()
        }
    if len(inputs) != 1:
        raise TensorError(
            "each instance must be an object keyed by input name: the signature has several inputs"
        )
    ((name, info),) = inputs.items()
    return {name: to_tensor(instances, info.dtype, name)}


def _columns(columns: object, inputs: Signature) -> dict[str, tensor_pb2.TensorProto]:
    if isinstance(columns, dict):
        unknown = sorted(set(columns) - set(inputs))
        if unknown:
            raise TensorError(f"input '{unknown[0]}' is not in the signature")
        return {name: to_tensor(value, inputs[name].dtype, name) for name, value in columns.items()}
    if len(inputs) != 1:
        raise TensorError("'inputs' must be an object keyed by input name: the signature has several inputs")
    ((name, info),) = inputs.items()
    return {name: to_tensor(columns, info.dtype, name)}


def _json(array: np.ndarray) -> object:
    return array.tolist()
