"""The digits classifier as a Triton Python-backend model: softmax(pixels / 16 @ W.T + b), row by row.

W and b sit beside this file in weights.npz (containers/triton/build_model.py trains them). Triton checks
each request's shape and datatype against config.pbtxt before execute() sees it.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        weights = np.load(Path(args["model_repository"]) / args["model_version"] / "weights.npz")
        self.coef = weights["coef"].astype(np.float32)
        self.intercept = weights["intercept"].astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            pixels = pb_utils.get_input_tensor_by_name(request, "IMAGES").as_numpy()
            logits = (pixels / np.float32(16.0)) @ self.coef.T + self.intercept
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
            labels = probabilities.argmax(axis=1).astype(np.int64)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("PROBABILITIES", probabilities),
                        pb_utils.Tensor("LABELS", labels),
                    ]
                )
            )
        return responses
