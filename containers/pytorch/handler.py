"""TorchServe handler for the digits model: JSON rows of 64 pixel values in, class and probabilities out.

Accepts `{"inputs": [[64 numbers], ...]}` (the seed blog's PyTorch payload) and `{"instances": [...]}`;
answers `{"predictions": [{"class": k, "probabilities": [10 numbers]}, ...]}`, one entry per row. A body
that is not that shape is refused with 400 and a message saying what was wrong.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

FEATURES = 64


class DigitsHandler(BaseHandler):  # type: ignore[misc]
    def initialize(self, context: Any) -> None:
        torch.set_num_threads(1)
        model_dir = context.system_properties.get("model_dir")
        serialized = context.manifest["model"]["serializedFile"]
        self.model = torch.jit.load(os.path.join(model_dir, serialized), map_location="cpu")
        self.model.eval()
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> tuple[torch.Tensor, list[int]]:
        rows: list[list[float]] = []
        counts: list[int] = []
        for request in data:
            instances = _instances(request.get("body", request.get("data")))
            rows.extend(instances)
            counts.append(len(instances))
        return torch.tensor(rows, dtype=torch.float32), counts

    def inference(
        self, data: tuple[torch.Tensor, list[int]], *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, list[int]]:
        rows, counts = data
        with torch.no_grad():
            return self.model(rows), counts

    def postprocess(self, data: tuple[torch.Tensor, list[int]]) -> list[dict[str, Any]]:
        probabilities, counts = data
        answers = []
        start = 0
        for index, count in enumerate(counts):
            self.context.set_response_content_type(index, "application/json")
            batch = probabilities[start : start + count]
            start += count
            answers.append(
                {
                    "predictions": [
                        {"class": int(row.argmax()), "probabilities": [round(float(p), 6) for p in row]}
                        for row in batch
                    ]
                }
            )
        return answers


def _instances(payload: Any) -> list[list[float]]:
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("utf-8", "replace")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise PredictionException("the body is not JSON", 400) from None
    if not isinstance(payload, dict):
        raise PredictionException("expected a JSON object with 'inputs': rows of 64 numbers", 400)
    rows = payload.get("inputs", payload.get("instances"))
    if not isinstance(rows, list) or not rows:
        raise PredictionException("expected 'inputs' or 'instances': a non-empty list of rows", 400)
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != FEATURES:
            raise PredictionException(f"row {index} must be a list of {FEATURES} numbers", 400)
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in row):
            raise PredictionException(f"row {index} must hold only numbers", 400)
    return rows
