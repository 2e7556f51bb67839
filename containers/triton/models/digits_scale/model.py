"""The ensemble's first step as a Triton Python-backend model: 8-bit pixels to the digits model's 0..16."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            pixels = pb_utils.get_input_tensor_by_name(request, "PIXELS").as_numpy()
            scaled = (pixels.astype(np.float32) * np.float32(16.0 / 255.0)).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("IMAGES", scaled)]))
        return responses
