"""Pipeline step 1: 8-bit grayscale 8x8 images as CSV rows in, the classifier's JSON input out.

Takes `text/csv`, one image per line, 64 values 0..255; answers `application/json`
`{"instances": [[64 values 0..16], ...]}`, the scale of scikit-learn's digits (what the models take).
"""

from __future__ import annotations

import json

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
        rows.append([round(v * 16 / 255, 4) for v in values])
    if not rows:
        raise BadRequest("no image in the request")
    return json.dumps({"instances": rows}).encode(), "application/json"


if __name__ == "__main__":
    serve("preprocess", preprocess)
