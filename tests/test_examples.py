"""The examples stay true: every endpoint document validates (test_up.py runs them), and the seed
blog's boto3 flow runs against the local SageMaker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_pytorch_model

from gateway.endpoint import load_endpoint

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_documents_validate(path: Path) -> None:
    load_endpoint(path)


def test_the_seed_blog_flow_runs_against_the_local_sagemaker() -> None:
    """examples/seed-blog: plain boto3 (S3 upload, create_model with SageMaker's TensorFlow and PyTorch
    inference container URIs in Direct mode, the waiter, both hostnames invoked with the blog's 28x28
    bodies, delete) against `mce up` and a local S3 server: the framework containers natively, over TF
    Serving's stand-in and TorchServe with SageMaker's PyTorch toolkit."""
    subprocess.run(
        [sys.executable, str(EXAMPLES / "seed-blog" / "build_models.py")], check=True, capture_output=True
    )
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "seed-blog" / "run.py")], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for hostname in ("tensorflow-mnist", "pytorch-mnist"):
        line = next(line for line in run.stdout.splitlines() if f"{hostname} -> " in line)
        predicted, truth = (json.loads("[" + part.split("]")[0] + "]") for part in line.split("[")[1:3])
        assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= 4, line
        assert line.endswith("(variant prod)"), line
    assert "deleted" in run.stdout and "mce | mce: stopped" in run.stdout


def test_the_seed_notebook_flow_runs_against_the_local_sagemaker() -> None:
    """examples/seed-notebook: plain boto3 (two models under an S3 prefix, a MultiModel container, ten
    more models added while it runs, 100 random TargetModels, delete) against `mce up`, a local S3 server
    and real Multi Model Server."""
    subprocess.run(
        [sys.executable, str(EXAMPLES.parent / "containers" / "multi-model" / "build_model.py")],
        check=True,
        capture_output=True,
    )
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "seed-notebook" / "run.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "12 models under s3://sagemaker-local/multi-model/models/" in run.stdout
    accuracy = int(run.stdout.split("100 invocations, accuracy ")[1].split("/")[0])
    assert accuracy >= 90, run.stdout
    assert "deleted" in run.stdout and "mce | mce: stopped" in run.stdout


def test_the_readme_local_sagemaker_snippet_runs_as_written(tmp_path: Path) -> None:
    """README, 'Test your boto3 deploy script locally': its Python block, unchanged, against `mce up` run
    from the repository root (the block's ModelDataUrl is relative to it), with the two variables it says to
    export."""
    from conftest import start_process

    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("## Test your boto3 deploy script locally") :]
    snippet = section[section.index("```python\n") + len("```python\n") :]
    snippet = snippet[: snippet.index("```")]
    build_pytorch_model()
    mce = start_process(
        [sys.executable, "-m", "gateway", "up", "--port", "0", "--state", str(tmp_path / "state")],
        stderr=tmp_path / "mce.log",
    )
    try:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_SAGEMAKER": mce.url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": mce.url,
        }
        run = subprocess.run(
            [sys.executable, "-c", snippet],
            cwd=EXAMPLES.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert '"predictions"' in run.stdout
    finally:
        assert mce.terminate(timeout=60) == 0


def test_the_example_deploy_test_suite_passes_with_the_pytest_plugin(tmp_path: Path) -> None:
    """examples/deploy-tests: a user's kind of test suite (deploy with boto3, classify digits, split
    traffic by weight) on the local_sagemaker fixture, run as its docstring says, from the repository root."""
    build_pytorch_model()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("--basetemp", str(tmp_path / "run"), str(EXAMPLES / "deploy-tests")),
        ],
        cwd=EXAMPLES.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
