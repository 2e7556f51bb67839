"""Wire-compatibility probe: one side speaks with TF Serving's official stubs, the other with the gateway's.

Each side runs in its own process: both stub sets define `tensorflow.TensorProto` and friends, and one
protobuf descriptor pool cannot hold both.

    python wire_probe.py official HOST:PORT   calls the server with tensorflow-serving-api's stubs; prints
                                              the requests and responses as hex (JSON)
    python wire_probe.py gateway              reads that JSON; builds the same requests with the gateway's
                                              stubs and parses the responses; prints what it found (JSON)
"""

from __future__ import annotations

import json
import os
import sys

ROWS = [[float((i * 7 + j) % 17) for j in range(64)] for i in range(3)]


def official(address: str) -> dict[str, object]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(address)
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    status = model_service_pb2_grpc.ModelServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "serving_default"
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(np.asarray(ROWS, dtype=np.float32)))
    response = predict.Predict(request, timeout=30)
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = "mnist"
    metadata = predict.GetModelMetadata(metadata_request, timeout=30)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "mnist"
    model_status = status.GetModelStatus(status_request, timeout=30)
    return {
        "predict_request": request.SerializeToString(deterministic=True).hex(),
        "predict_response": response.SerializeToString(deterministic=True).hex(),
        "probabilities": tf.make_ndarray(response.outputs["probabilities"]).tolist(),
        "metadata_request": metadata_request.SerializeToString(deterministic=True).hex(),
        "metadata_response": metadata.SerializeToString(deterministic=True).hex(),
        "status_request": status_request.SerializeToString(deterministic=True).hex(),
        "status_response": model_status.SerializeToString(deterministic=True).hex(),
    }


def gateway(seen: dict[str, str]) -> dict[str, object]:
    from gateway._proto.tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        predict_pb2,
    )
    from gateway.backends import tensors

    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata = get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        bytes.fromhex(seen["metadata_response"])
    )
    metadata.metadata["signature_def"].Unpack(signatures)
    inputs = dict(signatures.signature_def["serving_default"].inputs)
    tensor_inputs, _ = tensors.request_tensors({"instances": ROWS}, inputs)
    request = predict_pb2.PredictRequest(inputs=tensor_inputs)
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "serving_default"
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = "mnist"
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "mnist"
    response = predict_pb2.PredictResponse.FromString(bytes.fromhex(seen["predict_response"]))
    status = get_model_status_pb2.GetModelStatusResponse.FromString(bytes.fromhex(seen["status_response"]))
    return {
        "predict_request": request.SerializeToString(deterministic=True).hex(),
        "metadata_request": metadata_request.SerializeToString(deterministic=True).hex(),
        "status_request": status_request.SerializeToString(deterministic=True).hex(),
        "answer": tensors.answer_document(response.outputs, rows=True),
        "signature_inputs": {
            name: [info.dtype, [d.size for d in info.tensor_shape.dim]] for name, info in inputs.items()
        },
        "states": [s.state for s in status.model_version_status],
    }


if __name__ == "__main__":
    if sys.argv[1] == "official":
        print(json.dumps(official(sys.argv[2])))
    else:
        print(json.dumps(gateway(json.load(sys.stdin))))
