"""Build the PyTorch digits model: train, script with TorchScript, archive for TorchServe.

A small MLP trained on scikit-learn's bundled digits data (8x8 images, 64 features, pixel values 0..16),
fixed seeds, held-out accuracy printed. The scaling to 0..1 is inside the scripted model, so callers send
raw pixel values, the same input as the TensorFlow model takes. Output: BUILD/model-store/mnist.mar.

Re-running is cheap: nothing is rebuilt when this file, the handler and the torch version are unchanged.

    python containers/pytorch/build_model.py [--out build/pytorch]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODEL_NAME = "mnist"
MODEL_VERSION = "1.0"
SEED = 0


def fingerprint() -> str:
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    for path in (Path(__file__).resolve(), HERE / "handler.py"):
        digest.update(path.read_bytes())
    try:
        digest.update(version("torch").encode())  # without importing torch: that takes seconds
    except PackageNotFoundError:
        raise SystemExit("build_model.py: torch is not installed (pip install torch==2.13.0)") from None
    return digest.hexdigest()


def train(out: Path) -> float:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data.astype(np.float32),
        digits.target,
        test_size=0.2,
        random_state=SEED,
        stratify=digits.target,
    )

    class Digits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(64, 64)
            self.out = torch.nn.Linear(64, 10)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            """Class probabilities for rows of 64 raw pixel values (0..16)."""
            scaled = pixels / 16.0
            return torch.softmax(self.out(torch.relu(self.hidden(scaled))), dim=1)

    model = Digits()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(300):
        optimizer.zero_grad()
        probabilities = model(inputs)
        loss = torch.nn.functional.nll_loss(torch.log(probabilities + 1e-9), targets)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    accuracy = float((predicted == y_test).mean())
    torch.jit.script(model).save(str(out / f"{MODEL_NAME}.pt"))
    np.save(out / "test-inputs.npy", x_test[:16])
    return accuracy


def archive(out: Path) -> Path:
    store = out / "model-store"
    store.mkdir(exist_ok=True)
    subprocess.run(
        [
            shutil.which("torch-model-archiver")
            or str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name",
            MODEL_NAME,
            "--version",
            MODEL_VERSION,
            "--serialized-file",
            str(out / f"{MODEL_NAME}.pt"),
            "--handler",
            str(HERE / "handler.py"),
            "--export-path",
            str(store),
            "--force",
        ],
        check=True,
    )
    return store / f"{MODEL_NAME}.mar"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "pytorch")
    args = parser.parse_args()
    out: Path = args.out
    stamp = out / "build.json"
    current = fingerprint()
    if stamp.exists() and (out / "model-store" / f"{MODEL_NAME}.mar").exists():
        built = json.loads(stamp.read_text())
        if built.get("fingerprint") == current:
            print(f"pytorch model up to date in {out} (held-out accuracy {built['accuracy']:.3f})")
            return 0
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    accuracy = train(out)
    mar = archive(out)
    stamp.write_text(json.dumps({"fingerprint": current, "accuracy": accuracy, "model": MODEL_NAME}))
    print(f"pytorch model built: {mar} (held-out accuracy {accuracy:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
