"""Pipeline step 1: 8-bit grayscale 8x8 images as CSV rows in, the classifier's JSON input out.

Takes `text/csv`, one image per line, 64 values 0..255; answers `application/json`:
    PREPROCESS_OUTPUT=tfserving (default)  `{"instances": [[64 values 0..16], ...]}`, TF Serving's row format
                                           at the scale of scikit-learn's digits (what the models take)
    PREPROCESS_OUTPUT=kserve               the Open Inference Protocol's request for Triton's ensemble,
                                           `{"inputs": [{"name": "PIXELS", "datatype": "UINT8", ...}]}`,
                                           the 8-bit values as they are (the ensemble scales them)
"""

from __future__ import annotations

import json
import os

from contract import BadRequest, serve


def preprocess(body: bytes, content_type: str) -> tuple[bytes, str]:
    if not content_type.startswith("text/csv"):
        raise BadRequest(f"expected text/csv, got {content_type or 'no Content-Type'}")
    rows = []
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            raise BadRequest(f"line {number}: not numbers") from None
        if len(values) != 64 or not all(0 <= v <= 255 for v in values):
            raise BadRequest(f"line {number}: expected 64 values from 0 to 255")
        rows.append(values)
    if not rows:
        raise BadRequest("no image in the request")
    if OUTPUT == "kserve":
        pixels = [[int(v) for v in row] for row in rows]
        tensor = {"name": "PIXELS", "shape": [len(rows), 64], "datatype": "UINT8", "data": pixels}
        return json.dumps({"inputs": [tensor]}).encode(), "application/json"
    scaled = [[round(v * 16 / 255, 4) for v in row] for row in rows]
    return json.dumps({"instances": scaled}).encode(), "application/json"


OUTPUT = os.environ.get("PREPROCESS_OUTPUT", "tfserving")


if __name__ == "__main__":
    serve("preprocess", preprocess)
