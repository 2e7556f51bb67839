"""Build the TensorFlow digits model: train a small Keras classifier, export a SavedModel for TF Serving.

Trained on scikit-learn's bundled digits data (8x8 images, 64 features, pixel values 0..16), fixed seeds,
held-out accuracy printed. Exported in TF Serving's layout, BUILD/model/mnist/1/saved_model.pb, with one
signature, `serving_default`: input `pixels` (float32, [batch, 64], raw pixel values; the scaling is
inside the model, as in the PyTorch model) and output `probabilities` (float32, [batch, 10]).

Re-running is cheap: nothing is rebuilt when this file and the TensorFlow version are unchanged.

    python containers/tensorflow/build_model.py [--out build/tensorflow]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODEL_NAME = "mnist"
VERSION = 1
SEED = 0


def fingerprint() -> str:
    digest = hashlib.sha256(Path(__file__).resolve().read_bytes())
    digest.update(
        _installed("tensorflow-cpu", "tensorflow").encode()
    )  # without importing it: that takes seconds
    return digest.hexdigest()


def _installed(*names: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    raise SystemExit(f"build_model.py: none of {', '.join(names)} is installed (pip install tensorflow-cpu)")


def build(out: Path) -> float:
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data.astype(np.float32),
        digits.target,
        test_size=0.2,
        random_state=SEED,
        stratify=digits.target,
    )
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(64,), name="pixels"),
            tf.keras.layers.Rescaling(1.0 / 16.0),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x_train, y_train, epochs=40, batch_size=64, verbose=0, shuffle=True)
    accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])

    class Serving(tf.Module):
        def __init__(self, classifier: tf.keras.Model) -> None:
            super().__init__()
            self.classifier = classifier

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
        def serve(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probabilities": self.classifier(pixels, training=False)}

    serving = Serving(model)
    tf.saved_model.save(
        serving, str(out / "model" / MODEL_NAME / str(VERSION)), signatures={"serving_default": serving.serve}
    )
    np.save(out / "test-inputs.npy", x_test[:16])
    return accuracy


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "tensorflow")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out: Path = args.out
    stamp = out / "build.json"
    current = fingerprint()
    if stamp.exists() and (out / "model" / MODEL_NAME / str(VERSION) / "saved_model.pb").exists():
        built = json.loads(stamp.read_text())
        if built.get("fingerprint") == current:
            print(f"tensorflow model up to date in {out} (held-out accuracy {built['accuracy']:.3f})")
            return 0
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    accuracy = build(out)
    stamp.write_text(json.dumps({"fingerprint": current, "accuracy": accuracy, "model": MODEL_NAME}))
    print(f"tensorflow model built: {out / 'model' / MODEL_NAME} (held-out accuracy {accuracy:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
