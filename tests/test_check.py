"""`mce check`: every rule passes for the project's own containers and catches its own mistake in a
container that breaks it (tests/containers/contract_breaker.py, natively and as an image under Docker)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE, ROOT, build_image, docker, require_docker

BREAKER = HERE / "containers" / "contract_breaker.py"
ECHO = ROOT / "examples" / "containers" / "echo.py"
IMAGE = "mce-test/breaker:1"
UNLABELLED = "mce-test/breaker:unlabelled"
TINI = "mce-test/breaker:tini"


def mce_check(*args: str) -> tuple[int, dict[str, Any]]:
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.stdout, run.stderr
    return run.returncode, json.loads(run.stdout)


def results(report: dict[str, Any]) -> dict[str, str]:
    return {rule["rule"]: rule["result"] for rule in report["rules"]}


def why(report: dict[str, Any], rule: str) -> str:
    return str(next(r["why"] for r in report["rules"] if r["rule"] == rule))


def failed(report: dict[str, Any]) -> set[str]:
    return {rule for rule, result in results(report).items() if result == "fail"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_example_container_keeps_every_rule() -> None:
    code, report = mce_check("--", sys.executable, str(ECHO))
    assert code == 0 and report["passed"], report
    assert set(results(report)) == {
        "/ping",
        "SAGEMAKER_BIND_TO_PORT",
        "other ports",
        "/invocations",
        "concurrent requests",
        "SIGTERM",
    }
    assert set(results(report).values()) == {"pass"}


def test_the_streaming_generator_keeps_every_rule(tmp_path: Path) -> None:
    """containers/generator (the streaming example's container), with its model and a prompt."""
    model = tmp_path / "generator"
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "generator" / "build_model.py"), "--out", str(model)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    body = tmp_path / "prompt.json"
    body.write_text(json.dumps({"inputs": "Beautiful is", "parameters": {"max_new_tokens": 5, "seed": 0}}))
    code, report = mce_check(
        "--model",
        str(model),
        "--body",
        str(body),
        "--env",
        "GENERATOR_TOKEN_SECONDS=0",
        "--",
        sys.executable,
        str(ROOT / "containers" / "generator" / "serve.py"),
    )
    assert code == 0 and report["passed"], report
    assert results(report)["/invocations"] == "pass"


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model of containers/multi-model, unpacked: what the multi-model rules load."""
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "multi-model" / "build_model.py")], check=True, timeout=600
    )
    folder = tmp_path_factory.mktemp("digits")
    with tarfile.open(ROOT / "build" / "multi-model" / "models" / "digits-mlp.tar.gz") as archive:
        archive.extractall(folder, filter="data")
    return folder


def test_the_multi_model_container_keeps_every_rule(digits_model: Path, tmp_path: Path) -> None:
    """Multi Model Server as containers/multi-model runs it: the multi-model API, invoked per model."""
    body = tmp_path / "digit.json"
    body.write_text(json.dumps([[0, 0, 5, 13, 9, 1, 0, 0] * 8]))
    code, report = mce_check(
        "--multi-model",
        "--model",
        str(digits_model),
        "--body",
        str(body),
        "--env",
        "MCE_BIND_ADDRESS=127.0.0.1",
        "--",
        sys.executable,
        str(ROOT / "containers" / "multi-model" / "serve.py"),
    )
    assert code == 0 and report["passed"], report
    passed = {rule for rule, result in results(report).items() if result == "pass"}
    assert {"load", "load again: 409", "list", "get", "unknown model: 404", "unload"} <= passed
    assert "/models/mce-check-model/invoke" in passed and "/invocations" not in results(report)
    assert results(report)["out of memory: 507"] == "skip"


# mode -> (mce check options, the rules it breaks, words the first of them says)
BROKEN = {
    "exits": (
        [],
        {"/ping"},
        "exited with code 3 before it was healthy: cannot find /opt/ml/model/weights.bin",
    ),
    "ping-503": (["--startup-timeout", "2"], {"/ping"}, "no 200 within 2 s (last: status 503)"),
    "invoke-500": ([], {"/invocations"}, "status 500 for the sample request"),
    "invoke-hangs": (["--invoke-timeout", "2"], {"/invocations"}, "no answer within 2 s (timed out)"),
    "extra-port": ([], {"other ports"}, "outside SAGEMAKER_SAFE_PORT_RANGE="),
    "serial": ([], {"concurrent requests"}, "/ping while they ran: timed out"),
    "ignores-sigterm": (
        ["--stop-grace", "2"],
        {"SIGTERM"},
        "still running 2 s after SIGTERM: SIGKILL ended it",
    ),
}


@pytest.mark.parametrize("mode", sorted(BROKEN))
def test_a_broken_rule_is_caught_by_that_rule(mode: str) -> None:
    options, broken, words = BROKEN[mode]
    code, report = mce_check(*options, "--", sys.executable, str(BREAKER), mode)
    assert code == 1 and not report["passed"]
    assert failed(report) == broken, report
    assert words in why(report, sorted(broken)[0]), report


def test_a_container_ignoring_sagemaker_bind_to_port_is_told_where_it_listens() -> None:
    port = free_port()
    code, report = mce_check(
        "--startup-timeout",
        "2",
        "--env",
        f"BREAKER_PORT={port}",
        "--",
        sys.executable,
        str(BREAKER),
        "wrong-port",
    )
    assert code == 1
    assert failed(report) == {"/ping", "SAGEMAKER_BIND_TO_PORT"}, report
    assert f"it listens on {port}, not on SAGEMAKER_BIND_TO_PORT=" in why(report, "SAGEMAKER_BIND_TO_PORT")


@pytest.mark.parametrize(
    ("mode", "rule", "words"),
    [
        ("mm-no-409", "load again: 409", "POST /models: 200, not 409"),
        ("mm-unknown-500", "unknown model: 404", "POST /models/mce-check-absent/invoke: 500, not 404"),
    ],
)
def test_a_broken_multi_model_api_is_caught(mode: str, rule: str, words: str, digits_model: Path) -> None:
    code, report = mce_check(
        "--multi-model", "--model", str(digits_model), "--", sys.executable, str(BREAKER), mode
    )
    assert code == 1
    assert failed(report) == {rule}, report
    assert words in why(report, rule)


def test_a_command_that_cannot_start_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    code, report = mce_check("--", str(tmp_path / "no-such-server"))
    assert code == 1 and failed(report) == {"/ping"}
    assert "it could not be started: No such file or directory" in why(report, "/ping")


def test_a_sample_body_that_cannot_be_read_is_refused_before_anything_starts(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--body", str(tmp_path / "absent.json"), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip() == f"mce: --body {tmp_path / 'absent.json'}: No such file or directory"


def test_the_table_marks_each_rule_and_names_its_source() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--", sys.executable, str(BREAKER), "invoke-500"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0] == f"mce check {sys.executable} {BREAKER} invoke-500"
    assert any(
        line.startswith("  ✘ /invocations") and "[DG:your-algorithms-inference-code]" in line
        for line in lines
    )
    assert any(line.startswith("  ✔ /ping") for line in lines)
    assert lines[-1] == "1 rule(s) broken"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    require_docker()
    dockerfile = HERE / "containers" / "contract_breaker.Dockerfile"
    build_image(IMAGE, HERE / "containers", dockerfile)
    build_image(UNLABELLED, HERE / "containers", dockerfile, BIND_TO_PORT="false")
    tini = tmp_path_factory.mktemp("tini")
    (tini / "Dockerfile").write_text(
        f"FROM {IMAGE}\nRUN ln -s /usr/local/bin/python /usr/local/bin/tini\n"
        'ENTRYPOINT ["/usr/local/bin/tini", "/srv/contract_breaker.py"]\n'
    )
    build_image(TINI, tini)
    yield
    docker("rmi", IMAGE, UNLABELLED, TINI, check=False)


def checked_containers() -> list[str]:
    return docker("ps", "--all", "--quiet", "--filter", "name=mce-check-").stdout.split()


def test_an_image_that_keeps_every_rule(images: None) -> None:
    code, report = mce_check("--env", "BREAKER_MODE=good", IMAGE)
    assert code == 0 and report["passed"], report
    assert results(report)["serve"] == "pass" and results(report)["bind-to-port label"] == "pass"
    assert "gets `serve` as its argument" in why(report, "serve")
    assert checked_containers() == []


@pytest.mark.parametrize(
    ("image", "rule", "words"),
    [
        (UNLABELLED, "bind-to-port label", "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=false"),
        (TINI, "serve", "ENTRYPOINT is tini (/usr/local/bin/tini)"),
    ],
)
def test_an_image_rule_catches_its_mistake(images: None, image: str, rule: str, words: str) -> None:
    code, report = mce_check("--env", "BREAKER_MODE=good", image)
    assert code == 1
    assert failed(report) == {rule}, report
    assert words in why(report, rule)
    assert checked_containers() == []


def test_an_image_listening_on_8080_regardless_is_told_so(images: None) -> None:
    """Inside the container the port is seen in its own network namespace, not through the published one."""
    code, report = mce_check(
        "--startup-timeout", "3", "--env", "BREAKER_MODE=wrong-port", "--env", "BREAKER_PORT=8080", IMAGE
    )
    assert code == 1
    assert failed(report) == {"/ping", "SAGEMAKER_BIND_TO_PORT"}, report
    assert "it listens on 8080, not on SAGEMAKER_BIND_TO_PORT=" in why(report, "SAGEMAKER_BIND_TO_PORT")
    assert checked_containers() == []
