"""The package as a user installs it: a wheel and an sdist built from this tree, the wheel installed into
a fresh virtual environment with its base dependencies only (no test toolchain, no framework), and used
from a folder outside the clone: `mce`, the built-in image map with the containers it names, and the
pytest plugin running a user's deploy test against their own container."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, Processes, container_doc, endpoint_doc, start_process

# what a user's own test session needs beside mce-gateway; the package itself brings the rest
USER_PACKAGES = ("boto3", "pytest")

# the wheel compiles the request path with mypyc (D54): a few minutes on two cores
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the sdist), built from this tree."""
    out = tmp_path_factory.mktemp("dist")
    quiet = {"capture_output": True, "text": True, "timeout": 600}
    wheel = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        **quiet,  # type: ignore[call-overload]
    )
    assert wheel.returncode == 0, wheel.stderr
    sdist = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(out)],
        cwd=ROOT,
        **quiet,  # type: ignore[call-overload]
    )
    assert sdist.returncode == 0, sdist.stderr
    [whl] = out.glob("*.whl")
    [tgz] = out.glob("*.tar.gz")
    return whl, tgz


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and a user's test tools installed: its bin folder."""
    folder = tmp_path_factory.mktemp("user-venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    installed = subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", str(built[0]), *USER_PACKAGES],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return folder / "bin"


def outside(tmp_path: Path) -> dict[str, str]:
    """An environment as a user's shell has it: nothing of this clone or its venv, no AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env["HOME"] = str(tmp_path)
    return env


def test_the_wheel_and_sdist_carry_the_containers_the_image_map_names(built: tuple[Path, Path]) -> None:
    whl, tgz = built
    names = zipfile.ZipFile(whl).namelist()
    assert "gateway/control/images.yaml" in names
    for asset in ("index.html", "console.js", "console.css", "icon.svg"):  # the console's page
        assert f"gateway/console/{asset}" in names, asset
    for script in (
        "multi-model/serve.py",
        "pytorch/serve.py",
        "tensorflow/serve.sh",
        "triton/serve.py",
        "dlc.py",
    ):
        assert f"gateway/_bundled/containers/{script}" in names, script
    assert not any("/bases/" in name or "__pycache__" in name for name in names)
    # the request path is compiled (setup.py, D54): a user's gateway runs the compiled modules
    assert any(name.startswith("gateway/server.") and name.endswith(".so") for name in names), names
    entry_points = (
        zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )
    assert "[pytest11]\nmce = gateway.pytest_plugin" in entry_points
    with tarfile.open(tgz) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("/containers/multi-model/serve.py") for m in members)
    assert any(m.endswith("/gateway/control/images.yaml") for m in members)


def test_installed_outside_the_clone_it_runs_from_its_own_copy(venv: Path, tmp_path: Path) -> None:
    """`mce` runs; the built-in image map's commands name the package's own copy of the containers."""
    assert subprocess.run([str(venv / "mce"), "--version"], capture_output=True, text=True).returncode == 0
    probe = (
        "import json, gateway, gateway.server; from gateway.control.images import ImageMap; "
        "m = ImageMap.load(); "
        "print(json.dumps([gateway.__file__, gateway.server.__file__, "
        "m.backend('mce/multi-model:1')['Launch']['Command'], "
        "m.backend('763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu')['Launch']['Command']]))"
    )
    run = subprocess.run(
        [str(venv / "python"), "-c", probe],
        cwd=tmp_path,
        env=outside(tmp_path),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    where, server, multi_model, pytorch = json.loads(run.stdout)
    assert where.startswith(str(venv.parent)) and not where.startswith(str(ROOT / "gateway"))
    assert server.endswith(".so"), server  # the compiled request path (D54)
    for command in (multi_model, pytorch):
        script = Path(command[1])
        assert script.is_file() and script.is_relative_to(venv.parent), command


def test_a_users_deploy_test_runs_with_the_installed_plugin(venv: Path, tmp_path: Path) -> None:
    """A user's repository outside the clone: their own container (a command in an image map), their deploy
    test with the local_sagemaker fixture, pytest from the installed environment."""
    repo = tmp_path / "their-repo"
    (repo / "container").mkdir(parents=True)
    for name in ("contract.py", "echo.py"):
        shutil.copy(ROOT / "examples" / "containers" / name, repo / "container" / name)
    (repo / "images.yaml").write_text(
        "Images:\n"
        '  - Image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/echo:*"\n'
        "    Backend:\n"
        "      Protocol: sagemaker\n"
        f"      Launch: {{Command: [{venv / 'python'}, container/echo.py, echo]}}\n"
    )
    (repo / "test_deploy.py").write_text(
        """
import json

import boto3


def test_deploy_and_invoke(local_sagemaker):
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="echo", ExecutionRoleArn="arn:aws:iam::123456789012:role/deploy",
                    PrimaryContainer={"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/echo:1"})
    sm.create_endpoint_config(EndpointConfigName="echo", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "echo", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="echo", EndpointConfigName="echo")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="echo")
    answer = boto3.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="echo", ContentType="application/json", Body=b'{"x": 1}')
    assert json.loads(answer["Body"].read()) == {"container": "echo", "request": {"x": 1}}
    sm.delete_endpoint(EndpointName="echo")
"""
    )
    run = subprocess.run(
        [str(venv / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mce-images", "images.yaml"],
        cwd=repo,
        env=outside(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_the_installed_gateway_holds_its_memory_across_requests(
    venv: Path, procs: Processes, tmp_path: Path
) -> None:
    """The compiled request path frees what each request made: mypy before 2.4 compiled `fresh + b"..."`
    so that the left bytes were never freed (mypyc/mypyc#1192), some 400 bytes lost a request (D56). After
    a warm-up, 20,000 invocations on one kept-alive connection leave the resident size where it was, give or
    take the allocator's slack: the leak would have added some 8 MiB."""
    backend = procs.container("echo")
    document = procs.write_endpoint(endpoint_doc("Direct", [container_doc("echo", backend.url)]))
    gateway = start_process(
        [str(venv / "mce"), "serve", str(document), "--port", "0"], stderr=tmp_path / "gateway.log"
    )
    procs.started.append(gateway)
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-Amzn-SageMaker-Target-Container-Hostname: echo\r\nContent-Length: 2\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        answers = sock.makefile("rb")

        def invoke(times: int) -> None:
            for _ in range(times):
                sock.sendall(request)
                assert answers.readline().startswith(b"HTTP/1.1 200 "), "not answered 200"
                length = 0
                while (line := answers.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answers.read(length)

        invoke(3_000)
        before = resident_kib(gateway.popen.pid)
        invoke(20_000)
        grown = resident_kib(gateway.popen.pid) - before
        answers.close()
    assert grown < 1024, f"the gateway's resident size grew {grown} KiB over 20,000 requests"
