"""Build the multi-model container's example models: three small digits classifiers as SageMaker artifacts.

A multi-model endpoint serves many artifacts from one S3 prefix, so the example needs several models
that differ visibly. All three are trained on scikit-learn's bundled digits data (8x8 images, 64 raw
pixel values 0..16, 10 classes) with fixed seeds, and scored on the same held-out quarter:

    DIR/models/digits-logreg.tar.gz   multinomial logistic regression
    DIR/models/digits-mlp.tar.gz      MLP, one hidden layer of 32 ReLU units
    DIR/extra/digits-small.tar.gz     MLP, 16 ReLU units, trained on half the training rows
                                      (the example copies it under the prefix while the endpoint runs)

Each artifact is a `.tar.gz` holding `model.npz` and `meta.json` at its top level, as SageMaker unpacks
it into the model directory. The weights are plain numpy arrays (`W0, b0, W1, b1, ...` plus `scale`),
read with `allow_pickle=False`: the serving side needs numpy only, not scikit-learn, and loading a
model never runs code. The forward pass is `softmax(relu(...relu(x*scale @ W0 + b0)...) @ Wn + bn)`,
which is exactly scikit-learn's `predict_proba` for both estimators.

Output bytes are deterministic (fixed seeds, zip and tar entries with fixed times, gzip without a
timestamp), so a rebuild on the same machine gives identical artifacts. Re-running is cheap: when every
output exists and is newer than this file, nothing is trained.

    python containers/multi-model/build_model.py --out build/multi-model
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SEED = 0
FEATURES = 64
CLASSES = 10
PIXEL_MAX = 16.0
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


@dataclass(frozen=True, slots=True)
class Spec:
    """One artifact to build: where it goes and how it is trained."""

    name: str
    folder: str
    kind: str  # "logreg" or "mlp"
    hidden: int = 0
    train_fraction: float = 1.0


SPECS = (
    Spec("digits-logreg", "models", "logreg"),
    Spec("digits-mlp", "models", "mlp", hidden=32),
    Spec("digits-small", "extra", "mlp", hidden=16, train_fraction=0.5),
)


def artifact_path(out: Path, spec: Spec) -> Path:
    return out / spec.folder / f"{spec.name}.tar.gz"


def up_to_date(out: Path) -> bool:
    source_time = Path(__file__).stat().st_mtime
    paths = [artifact_path(out, spec) for spec in SPECS]
    return all(path.exists() and path.stat().st_mtime > source_time for path in paths)


def train(spec: Spec, x_train: np.ndarray, y_train: np.ndarray) -> list[np.ndarray]:
    """Fit one estimator on pixels scaled to 0..1; return its layers as [W0, b0, W1, b1, ...]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    rows = int(len(x_train) * spec.train_fraction)
    x, y = x_train[:rows] / PIXEL_MAX, y_train[:rows]
    if spec.kind == "logreg":
        linear = LogisticRegression(max_iter=2000, random_state=SEED).fit(x, y)
        return [linear.coef_.T.copy(), linear.intercept_.copy()]
    mlp = MLPClassifier(
        hidden_layer_sizes=(spec.hidden,), activation="relu", max_iter=1000, random_state=SEED
    )
    mlp.fit(x, y)
    layers: list[np.ndarray] = []
    for weights, bias in zip(mlp.coefs_, mlp.intercepts_, strict=True):
        layers += [weights, bias]
    return layers


def forward(arrays: dict[str, np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """The serving computation (model_handler.py does the same), used here to score the saved weights."""
    import numpy as np

    hidden = pixels * arrays["scale"]
    layers = len([key for key in arrays if key.startswith("W")])
    for index in range(layers):
        hidden = hidden @ arrays[f"W{index}"] + arrays[f"b{index}"]
        if index < layers - 1:
            hidden = np.maximum(hidden, 0.0)
    hidden = hidden - hidden.max(axis=1, keepdims=True)
    exp = np.exp(hidden)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (a zip of .npy files) with fixed entry times: numpy's savez stamps the current time."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def write_artifact(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with (
        open(partial, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.replace(path)  # a half-written artifact never looks up to date


def build(out: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target
    )
    for spec in SPECS:
        layers = train(spec, x_train, y_train)
        arrays = {"scale": np.array(1.0 / PIXEL_MAX)}
        for index in range(0, len(layers), 2):
            arrays[f"W{index // 2}"] = np.asarray(layers[index], dtype=np.float64)
            arrays[f"b{index // 2}"] = np.asarray(layers[index + 1], dtype=np.float64)
        accuracy = float((forward(arrays, x_test).argmax(axis=1) == y_test).mean())
        meta = {
            "name": spec.name,
            "kind": spec.kind,
            "hidden_units": spec.hidden,
            "train_rows": int(len(x_train) * spec.train_fraction),
            "held_out_accuracy": round(accuracy, 4),
            "input": {"shape": [None, FEATURES], "dtype": "float", "range": [0, PIXEL_MAX]},
            "output": {"classes": CLASSES, "labels": list(range(CLASSES))},
            "seed": SEED,
        }
        members = {"model.npz": npz_bytes(arrays), "meta.json": (json.dumps(meta, indent=2) + "\n").encode()}
        path = artifact_path(out, spec)
        write_artifact(path, members)
        print(f"{spec.name}: held-out accuracy {accuracy:.4f} -> {path}")


DEFAULT_OUT = Path(__file__).resolve().parent.parent.parent / "build" / "multi-model"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    out: Path = args.out
    if up_to_date(out):
        print(f"multi-model artifacts up to date in {out}")
        return 0
    build(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
