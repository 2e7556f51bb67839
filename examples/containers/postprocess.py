"""Pipeline step 3: the classifier's probabilities in, a label and its confidence per image out.

Takes TF Serving's answer `{"predictions": [[10 probabilities], ...]}`, or the Open Inference Protocol's
(Triton's) with a `PROBABILITIES` output of shape [n, 10]; answers `{"labels": [...], "confidence": [...]}`.
"""

from __future__ import annotations

import json
from typing import Any

from contract import BadRequest, serve


def postprocess(body: bytes, content_type: str) -> tuple[bytes, str]:
    try:
        predictions = _probabilities(json.loads(body))
        labels = [max(range(len(p)), key=p.__getitem__) for p in predictions]
    except (ValueError, KeyError, TypeError):
        raise BadRequest(
            'expected {"predictions": [[probabilities], ...]} or '
            '{"outputs": [{"name": "PROBABILITIES", ...}]}'
        ) from None
    confidence = [round(p[label], 4) for p, label in zip(predictions, labels, strict=True)]
    return json.dumps({"labels": labels, "confidence": confidence}).encode(), "application/json"


def _probabilities(answer: dict[str, Any]) -> list[list[float]]:
    if "predictions" in answer:
        predictions: list[list[float]] = answer["predictions"]
        return predictions
    (tensor,) = [o for o in answer["outputs"] if o["name"] == "PROBABILITIES"]
    rows, width = tensor["shape"]
    data = tensor["data"]
    return [data[i * width : (i + 1) * width] for i in range(rows)]


if __name__ == "__main__":
    serve("postprocess", postprocess)
