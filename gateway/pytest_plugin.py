"""The pytest plugin (entry point `pytest11`, installed with the package): a local SageMaker for a test
session.

    def test_my_deploy_script(local_sagemaker):
        my_deploy_script()           # boto3.client("sagemaker") reaches `mce up`: nothing to change
        ...

`local_sagemaker` starts `mce up` once per session on a free port, in the folder pytest runs in (so a
relative ModelDataUrl means what it does to `mce up` run there), its state in a temporary folder; points
AWS_ENDPOINT_URL_SAGEMAKER and AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME at it for the session, with a region and
dummy credentials where none are set; and stops it at the end (SIGTERM: every container it started stops
with it). Options: `--mce-images FILE` (an image map, as `mce up --images`) and `--mce-args "..."` (more
`mce up` arguments), or the ini keys `mce_images` and `mce_args`. When a test that used it fails, its
report shows every endpoint's status and FailureReason and the last lines of each container's log.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 120.0  # s for `mce up` to listen (it restores nothing in a fresh state: seconds)
STOP_TIMEOUT = 60.0  # s for `mce up` to stop every container after SIGTERM (their grace period is 30 s)
LOG_LINES = 15  # per container log, in a failed test's report
READY_LINE = "mce-gateway: local SageMaker ("


class LocalSageMakerProcess:
    """A running `mce up`: its `url`, `state` folder and `log` (its console), and boto3 clients for it."""

    def __init__(self, state: Path, log: Path, argv: list[str], cwd: Path) -> None:
        self.state, self.log = state, log
        self._ready = threading.Event()
        self.url = ""
        self._out = open(log, "w")  # closed by stop()
        self._proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._pump = threading.Thread(target=self._copy_console, name="mce up console", daemon=True)
        self._pump.start()
        if not self._ready.wait(READY_TIMEOUT) or not self.url:
            self.stop()
            said = self.log.read_text()
            raise RuntimeError(
                f"mce up did not start ({' '.join(argv)}); its console said:\n{said[-4000:] or '(nothing)'}"
            )

    def _copy_console(self) -> None:
        """Copy mce up's console to the log, and learn its URL from the line that says it listens."""
        assert self._proc.stdout is not None
        with self._proc.stdout:
            for line in self._proc.stdout:
                self._out.write(line)
                self._out.flush()
                if not self._ready.is_set() and line.startswith(READY_LINE) and " listening on " in line:
                    self.url = line.rsplit(" listening on ", 1)[1].strip()
                    self._ready.set()
        self._ready.set()  # it exited: whoever waits learns it from an empty url

    def client(self, service: str, **options: Any) -> Any:
        """A boto3 client of `service` ("sagemaker", "sagemaker-runtime", ...) for this local SageMaker."""
        import boto3  # the fixture's users have it; the plugin loads in every pytest run without it

        return boto3.client(service, endpoint_url=self.url, **options)

    @property
    def sagemaker(self) -> Any:
        return self.client("sagemaker")

    @property
    def runtime(self) -> Any:
        return self.client("sagemaker-runtime")

    def stop(self) -> int:
        """SIGTERM, which stops every container it started; SIGKILL if it has not exited within
        STOP_TIMEOUT. Returns its exit status."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        code = self._proc.wait()
        self._pump.join(10)
        self._out.close()
        return code

    def report(self) -> str:
        """Every endpoint's status and FailureReason, and the last lines of each container's log."""
        lines: list[str] = []
        try:
            sagemaker = self.sagemaker
            names = [
                endpoint["EndpointName"]
                for page in sagemaker.get_paginator("list_endpoints").paginate()
                for endpoint in page["Endpoints"]
            ]
            for name in sorted(names):
                described = sagemaker.describe_endpoint(EndpointName=name)
                line = f"endpoint {name}: {described['EndpointStatus']}"
                if described.get("FailureReason"):
                    line += f": {described['FailureReason']}"
                lines.append(line)
        except Exception as exc:  # the report must not hide the test's own failure
            lines.append(f"(could not list the endpoints: {exc})")
        for path in sorted(self.state.rglob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-LOG_LINES:]
            if tail:
                lines.append(f"--- {path.relative_to(self.state)} (last {len(tail)} lines)")
                lines.extend(tail)
        return "\n".join(lines) if lines else "no endpoint"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mce", "a local SageMaker (the local_sagemaker fixture)")
    group.addoption("--mce-images", metavar="FILE", help="an image map for mce up (mce up --images)")
    group.addoption("--mce-args", metavar="ARGS", help='more mce up arguments, e.g. "--startup-timeout 300"')
    parser.addini("mce_images", "an image map for mce up (mce up --images)")
    parser.addini("mce_args", "more mce up arguments")


def _option(config: pytest.Config, name: str) -> str:
    given = config.getoption(f"--mce-{name}")
    return str(given) if given else str(config.getini(f"mce_{name}") or "")


def _credentials_configured() -> bool:
    """Whether botocore would find keys of the user's own without asking a metadata service: the
    environment's, a named profile, or a shared credentials file."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    return os.path.isfile(shared)


@pytest.fixture(scope="session")
def local_sagemaker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalSageMakerProcess]:
    """`mce up` for the session, with AWS_ENDPOINT_URL_SAGEMAKER(_RUNTIME) pointing at it."""
    folder = tmp_path_factory.mktemp("mce")
    argv = [sys.executable, "-m", "gateway", "up", "--port", "0", "--state", str(folder / "state")]
    # model data the tests write under pytest's temporary folders may be a local ModelDataUrl
    argv += ["--data-root", str(tmp_path_factory.getbasetemp())]
    images = _option(request.config, "images")
    if images:
        argv += ["--images", str(Path(request.config.invocation_params.dir, images))]
    argv += shlex.split(_option(request.config, "args"))
    with pytest.MonkeyPatch.context() as env:
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        if not _credentials_configured():
            env.setenv("AWS_ACCESS_KEY_ID", "local")
            env.setenv("AWS_SECRET_ACCESS_KEY", "local")
        server = LocalSageMakerProcess(folder / "state", folder / "mce.log", argv, Path.cwd())
        env.setenv("AWS_ENDPOINT_URL_SAGEMAKER", server.url)
        env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server.url)
        try:
            yield server
        finally:
            code = server.stop()
            if code != 0:
                print(f"\nmce up exited with {code}; its console: {server.log}", file=sys.stderr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    server = getattr(item, "funcargs", {}).get("local_sagemaker")
    if report.failed and call.when == "call" and isinstance(server, LocalSageMakerProcess):
        report.sections.append(("local SageMaker", server.report()))
    return report
