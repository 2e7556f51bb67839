"""What can be checked of the Dockerfiles without building them (tests/test_docker_compose.py builds them
on a real engine, on local stand-ins for the official base images)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).parent.parent
CONTAINERS = sorted(ROOT.glob("containers/*/Dockerfile"))
ALL = [*CONTAINERS, ROOT / "Dockerfile", ROOT / "examples" / "containers" / "Dockerfile"]
OFFICIAL = ("pytorch/torchserve:", "tensorflow/serving:", "nvcr.io/nvidia/tritonserver:", "python:")


def parse(path: Path) -> DockerfileParser:
    return DockerfileParser(str(path))


@pytest.mark.parametrize("path", CONTAINERS, ids=lambda p: p.parent.name)
def test_serving_container_honours_the_multi_container_contract(path: Path) -> None:
    dockerfile = parse(path)
    # SageMaker refuses a multi-container image without this label (spec §2.2)
    assert dockerfile.labels.get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true"


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(ROOT)))
def test_builds_from_official_images_with_sources_that_exist(path: Path) -> None:
    dockerfile = parse(path)
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "FROM":
            image = instruction["value"].split()[0]
            assert image.startswith(OFFICIAL), image
        if instruction["instruction"] in ("COPY", "ADD"):
            words = shlex.split(instruction["value"])
            if any(word.startswith("--from=") for word in words):
                continue
            for source in [w for w in words if not w.startswith("--")][:-1]:
                assert any(ROOT.glob(source)), f"{path}: {source} is not in the repository"


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_python_base_names_its_debian_release(path: Path) -> None:
    """`python:3.11-slim` moves to each new Debian release (it is trixie now, where the multi-model
    image's `openjdk-17-jre-headless` does not exist): the release its packages come from is pinned."""
    for instruction in parse(path).structure:
        if instruction["instruction"] == "FROM" and instruction["value"].startswith("python:"):
            image = instruction["value"].split()[0]
            assert image.endswith("-bookworm"), f"{path}: {image} does not name its Debian release"


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(ROOT)))
def test_entrypoint_is_exec_form_without_tini(path: Path) -> None:
    entrypoints = [i["value"] for i in parse(path).structure if i["instruction"] == "ENTRYPOINT"]
    assert entrypoints, "SageMaker runs `docker run IMAGE serve`: the image needs an ENTRYPOINT"
    argv = json.loads(entrypoints[-1])  # exec form is a JSON array (spec §5)
    assert "tini" not in argv[0]


def test_multi_model_container_advertises_it() -> None:
    dockerfile = parse(ROOT / "containers" / "multi-model" / "Dockerfile")
    # the bring-your-own multi-model label and the environment SageMaker sets for it (spec §4.2)
    assert dockerfile.labels.get("com.amazonaws.sagemaker.capabilities.multi-models") == "true"
    assert dockerfile.envs.get("SAGEMAKER_MULTI_MODEL") == "true"
    assert json.loads([i["value"] for i in dockerfile.structure if i["instruction"] == "CMD"][-1]) == [
        "serve"
    ]
