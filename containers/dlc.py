"""What SageMaker's framework containers (containers/pytorch-inference, containers/tensorflow-inference)
share when they run natively: the image tag checked against what is installed, the code folder, and
code/requirements.txt. Standard library only.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

WARNING_MARK = "[mce:warning] "  # such a line is a warning in `mce status` (gateway.launch.supervisor)
_TAG = re.compile(r":(?P<version>\d+(?:\.\d+)*)-(?P<device>[a-z]+)")


def check_image(image: str, framework: str, *distributions: str) -> str | None:
    """Why `image` (MCE_IMAGE) cannot run here (a GPU or Neuron build), or None. A framework version
    other than the installed one (the first of `distributions` found) is a warning on stdout."""
    found = _TAG.search(image.rsplit("/", 1)[-1])
    if found is None:
        return None
    device = found["device"]
    if device != "cpu":
        return (
            f"{image} is a {device.upper()} image; this machine runs the CPU one. Use the -cpu tag of the "
            "same version."
        )
    installed = ""
    for name in distributions:
        try:
            installed = importlib.metadata.version(name).split("+")[0]
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    wanted = found["version"]
    if installed and not (installed + ".").startswith(wanted + "."):
        print(
            f"{WARNING_MARK}{image} is {framework} {wanted}; this container runs the installed {framework} "
            f"{installed}. A model saved by {wanted} may behave differently.",
            flush=True,
        )
    return None


def code_folder(model_dir: Path) -> Path:
    """Where the inference code is: MCE_CODE_DIR (an s3:// SAGEMAKER_SUBMIT_DIRECTORY the launcher
    fetched), a local SAGEMAKER_SUBMIT_DIRECTORY folder, else the model's code/."""
    submitted = os.environ.get("MCE_CODE_DIR") or os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if submitted.startswith("file://"):
        submitted = submitted[len("file://") :]
    if submitted and Path(submitted).is_dir():
        return Path(submitted).resolve()
    return model_dir / "code"


def unmet_requirements(code: Path) -> list[str]:
    """The lines of code/requirements.txt whose distribution is not installed."""
    requirements = code / "requirements.txt"
    if not requirements.is_file():
        return []
    unmet = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(line)
    return unmet


def requirements_refusal(code: Path) -> str | None:
    """The reason to refuse code/requirements.txt (what it asks is not installed), or None."""
    unmet = unmet_requirements(code)
    if not unmet:
        return None
    return (
        f"{code / 'requirements.txt'} asks for what is not installed: {', '.join(unmet)}. Install it into "
        "mce's environment (the container does not install packages natively)."
    )
