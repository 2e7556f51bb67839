"""Build the Triton model repository: the digits classifier, its scaling step, and their ensemble.

    python containers/triton/build_model.py [--out build/triton]

Writes OUT/model-repository in Triton's layout (`<model>/config.pbtxt`, `<model>/1/...`) from the sources in
containers/triton/models, plus `digits/1/weights.npz`: a logistic regression trained on scikit-learn's
bundled digits data (8x8 images, pixel values 0..16, fixed seed), held-out accuracy printed. The models:

    digits           IMAGES FP32 [-1, 64] (0..16)    -> PROBABILITIES FP32 [-1, 10], LABELS INT64 [-1]
    digits_scale     PIXELS UINT8 [-1, 64] (0..255)  -> IMAGES FP32 [-1, 64]
    digits_pipeline  an ensemble: digits_scale, then digits (PIXELS in, PROBABILITIES and LABELS out)

Also OUT/multi-model/<name>.tar.gz: each of digits and digits_scale alone, as a SageMaker multi-model
artifact for Triton (a model repository holding that one model). Re-running is cheap: nothing is rebuilt
when the sources and this file are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCES = HERE / "models"
SEED = 0
VERSION = "1"
SINGLE_MODELS = ("digits", "digits_scale")


def fingerprint() -> str:
    digest = hashlib.sha256(Path(__file__).resolve().read_bytes())
    for path in sorted(SOURCES.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(SOURCES).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def train(weights: Path) -> float:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
    )
    model = LogisticRegression(max_iter=2000, random_state=SEED).fit(x_train, y_train)
    np.savez(weights, coef=model.coef_.astype(np.float32), intercept=model.intercept_.astype(np.float32))
    return float(model.score(x_test, y_test))


def lay_out(repository: Path) -> None:
    """Each model's config.pbtxt at its root and its other files in version folder 1 (an ensemble's is
    empty, as Triton requires one)."""
    for source in sorted(p for p in SOURCES.iterdir() if p.is_dir()):
        model = repository / source.name
        (model / VERSION).mkdir(parents=True)
        for path in source.iterdir():
            if path.name == "config.pbtxt":
                shutil.copy(path, model / path.name)
            elif path.is_file():
                shutil.copy(path, model / VERSION / path.name)


def single_model_archives(repository: Path, out: Path) -> None:
    out.mkdir()
    for name in SINGLE_MODELS:
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as archive:
            archive.add(repository / name, arcname=name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "triton")
    args = parser.parse_args()
    out: Path = args.out
    stamp = out / "build.json"
    current = fingerprint()
    if stamp.exists() and (out / "model-repository").is_dir():
        built = json.loads(stamp.read_text())
        if built.get("fingerprint") == current:
            print(f"triton model repository up to date in {out} (held-out accuracy {built['accuracy']:.3f})")
            return 0
    if out.exists():
        shutil.rmtree(out)
    repository = out / "model-repository"
    repository.mkdir(parents=True)
    lay_out(repository)
    accuracy = train(repository / "digits" / VERSION / "weights.npz")
    single_model_archives(repository, out / "multi-model")
    stamp.write_text(json.dumps({"fingerprint": current, "accuracy": accuracy}))
    print(f"triton model repository built: {repository} (held-out accuracy {accuracy:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
