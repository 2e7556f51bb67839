"""Pipeline step 3: the classifier's probabilities in, a label and its confidence per image out.

Takes TF Serving's answer `{"predictions": [[10 probabilities], ...]}`; answers
`{"labels": [...], "confidence": [...]}`.
"""

from __future__ import annotations

import json

from contract import BadRequest, serve


def postprocess(body: bytes, content_type: str) -> tuple[bytes, str]:
    try:
        predictions = json.loads(body)["predictions"]
        labels = [max(range(len(p)), key=p.__getitem__) for p in predictions]
    except (ValueError, KeyError, TypeError):
        raise BadRequest('expected {"predictions": [[probabilities], ...]}') from None
    confidence = [round(p[label], 4) for p, label in zip(predictions, labels, strict=True)]
    return json.dumps({"labels": labels, "confidence": confidence}).encode(), "application/json"


if __name__ == "__main__":
    serve("postprocess", postprocess)
