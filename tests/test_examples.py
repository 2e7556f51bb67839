"""The examples stay true: every endpoint document validates, and the echo demo runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import Processes, start_process

from gateway.endpoint import load_endpoint

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_documents_validate(path: Path) -> None:
    load_endpoint(path)


def test_echo_demo_end_to_end(procs: Processes) -> None:
    """examples/echo-direct.yaml over examples/containers/echo.py, invoked by examples/invoke_echo.py."""
    document = yaml.safe_load((EXAMPLES / "echo-direct.yaml").read_text())
    for container in document["Containers"]:
        echo = start_process(
            [sys.executable, str(EXAMPLES / "containers" / "echo.py"), container["ContainerHostname"]],
            env={"SAGEMAKER_BIND_TO_PORT": "0"},
        )
        procs.started.append(echo)
        container["Backend"]["Url"] = echo.url
    gateway = procs.gateway(document)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "invoke_echo.py"), gateway.url],
        check=False, capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert 'english -> {"container": "english"' in result.stdout
    assert 'french -> {"container": "french"' in result.stdout
    assert "german -> An error occurred (ValidationError)" in result.stdout
