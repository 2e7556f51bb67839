"""The seed blog's two models, in the shapes the blog deploys, trained here on what this machine has:
scikit-learn's bundled digits (8x8) upsampled to MNIST's 28x28, pixel values scaled to 0..1, fixed seeds.

    OUT/tensorflow/model.tar.gz   a Keras model exported as a SavedModel under `1/` (the TensorFlow
                                  inference container's layout); input (N, 28, 28, 1)
    OUT/pytorch/model.tar.gz      a small CNN's state_dict as model.pth, and code/inference.py in the
                                  blog's style (model_fn, input_fn, predict_fn, output_fn); input
                                  (N, 1, 28, 28) as {"inputs": ...}
    OUT/test.json                 held-out images and labels, for deploy.py

Cheap to re-run: nothing is rebuilt when this file is unchanged.

    python examples/seed-blog/build_models.py [--out build/seed-blog]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SEED = 0
TEST = 100  # the last images are held out

INFERENCE_PY = '''"""The PyTorch container's entry points for the digits CNN (SAGEMAKER_PROGRAM)."""
import json
import os

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=5)
        self.fc1 = nn.Linear(8 * 12 * 12, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return torch.log_softmax(self.fc2(torch.relu(self.fc1(x.flatten(1)))), dim=1)


def model_fn(model_dir):
    model = Net()
    with open(os.path.join(model_dir, "model.pth"), "rb") as f:
        model.load_state_dict(torch.load(f))
    return model.eval()


def input_fn(request_body, request_content_type):
    assert request_content_type == "application/json", request_content_type
    return torch.tensor(json.loads(request_body)["inputs"], dtype=torch.float32)


def predict_fn(input_object, model):
    with torch.no_grad():
        return model(input_object)


def output_fn(predictions, content_type):
    return json.dumps(predictions.numpy().tolist())
'''


def images() -> tuple[object, object]:
    """(N, 28, 28) float32 in 0..1 and the labels."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    large = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    return large.squeeze(1).numpy(), np.asarray(digits.target)


def build_pytorch(x: object, y: object, out: Path) -> None:
    import torch

    namespace: dict[str, object] = {}
    exec(compile(INFERENCE_PY, "inference.py", "exec"), namespace)  # the same Net the container loads
    torch.manual_seed(SEED)
    model = namespace["Net"]()  # type: ignore[operator]
    inputs = torch.tensor(x[:-TEST]).unsqueeze(1)  # type: ignore[index]
    labels = torch.tensor(y[:-TEST])  # type: ignore[index]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(8):
        for batch in torch.randperm(len(inputs)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    staging = out / "pytorch" / "staging"
    (staging / "code").mkdir(parents=True)
    torch.save(model.state_dict(), staging / "model.pth")
    (staging / "code" / "inference.py").write_text(INFERENCE_PY)
    pack(staging, out / "pytorch" / "model.tar.gz")


def build_tensorflow(x: object, y: object, out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(8, 5, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    model.fit(x[:-TEST, ..., None], y[:-TEST], epochs=8, batch_size=64, verbose=0)  # type: ignore[index]
    staging = out / "tensorflow" / "staging"
    model.export(str(staging / "1"), verbose=False)  # the container's layout: a numeric version folder
    pack(staging, out / "tensorflow" / "model.tar.gz")


def pack(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    shutil.rmtree(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "seed-blog")
    out = parser.parse_args().out.resolve()
    stamp = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    marker = out / "build.json"
    if marker.exists() and json.loads(marker.read_text()).get("source") == stamp:
        print(f"seed-blog models up to date in {out}")
        return 0
    shutil.rmtree(out, ignore_errors=True)
    (out / "pytorch").mkdir(parents=True)
    (out / "tensorflow").mkdir(parents=True)
    x, y = images()
    build_pytorch(x, y, out)
    build_tensorflow(x, y, out)
    test = {"images": x[-TEST:].round(4).tolist(), "labels": y[-TEST:].tolist()}  # type: ignore[index]
    (out / "test.json").write_text(json.dumps(test))
    marker.write_text(json.dumps({"source": stamp}))
    print(f"seed-blog models built in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
