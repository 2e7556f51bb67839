"""`mce check`: the SageMaker serving contract, rule by rule, against one container, before an endpoint is
paid for. The container is started as SageMaker starts it (an image: `docker run IMAGE serve`; a command:
natively), with SAGEMAKER_BIND_TO_PORT and SAGEMAKER_SAFE_PORT_RANGE set, its model data where SageMaker
puts it, and each rule is tried with real requests. Every finding names the document the rule comes from.

The checks run one after another in plain threads and sockets: a checker is not a server, and what it
measures (a ping's time, a stalled answer) must not wait behind an event loop of its own.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gateway.launch import docker
from gateway.launch.ports import PortAllocation, allocate
from gateway.launch.process import ContainerProcess, group_members

# The documents each rule comes from (docs.aws.amazon.com/sagemaker/latest/dg/<page>.html)
CONTAINER = "DG:your-algorithms-inference-code"  # the single-container contract
MULTI_CONTAINER = "DG:multi-container-endpoints"  # SAGEMAKER_BIND_TO_PORT, the safe port range, the label
MULTI_MODEL = "DG:mms-container-apis"  # the multi-model container API

PING_TIMEOUT = 2.0  # s: each /ping must answer within it (spec §5)
INVOKE_TIMEOUT = 60.0  # s: /invocations must answer within it (spec §5)
STARTUP_TIMEOUT = 240.0  # s: /ping must answer 200 within it (spec §5; ContainerStartupHealthCheckTimeout)
STOP_GRACE = 30.0  # s: after SIGTERM, SageMaker sends SIGKILL (spec §5)
CONCURRENT = 8  # requests at once in the concurrency rule
MULTI_MODEL_LABEL = "com.amazonaws.sagemaker.capabilities.multi-models"
TINI = ("tini", "/tini", "/sbin/tini", "/usr/bin/tini", "/usr/local/bin/tini")


@dataclass(frozen=True)
class Finding:
    rule: str
    result: str  # "pass", "fail", or "skip" (not applicable, or not reachable once an earlier rule failed)
    why: str
    source: str


@dataclass
class Options:
    """What to check with. `body`: the sample request; `model`: model data (a folder) mounted or named as
    SageMaker places it; `multi_model`: check the multi-model API too (an image says so by its label)."""

    body: bytes = b"{}"
    content_type: str = "application/json"
    accept: str | None = None
    model: Path | None = None
    multi_model: bool = False
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = STARTUP_TIMEOUT
    invoke_timeout: float = INVOKE_TIMEOUT
    stop_grace: float = STOP_GRACE


@dataclass
class Report:
    subject: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(f.result != "fail" for f in self.findings)

    def add(self, rule: str, ok: bool | None, why: str, source: str) -> bool:
        self.findings.append(Finding(rule, "skip" if ok is None else "pass" if ok else "fail", why, source))
        return bool(ok)

    def table(self) -> str:
        marks = {"pass": "✔", "fail": "✘", "skip": "-"}
        width = max(len(f.rule) for f in self.findings)
        lines = [f"mce check {self.subject}"]
        lines += [f"  {marks[f.result]} {f.rule:<{width}}  {f.why} [{f.source}]" for f in self.findings]
        failed = sum(f.result == "fail" for f in self.findings)
        lines.append(f"{'every rule holds' if not failed else f'{failed} rule(s) broken'}")
        return "\n".join(lines)

    def json(self) -> str:
        return json.dumps(
            {"subject": self.subject, "passed": self.passed, "rules": [asdict(f) for f in self.findings]},
            indent=2,
        )


class Subject:
    """A container being checked: started, reached on 127.0.0.1:`port`, asked what it listens on, stopped.
    Its ports are allocated as mce allocates a container's (gateway.launch.ports)."""

    name: str
    ports: PortAllocation
    process: ContainerProcess

    @property
    def port(self) -> int:
        return self.ports.bind

    def start(self, env: dict[str, str], model: Path | None, models: Path | None, log: Path) -> None:
        raise NotImplementedError

    def listening(self) -> set[int] | None:
        """The ports it listens on (None: cannot be told)."""
        raise NotImplementedError

    def models_path(self, models: Path) -> Path:
        """Where the container sees the checker's multi-model folder `models`."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Make sure nothing of it is left."""


class Command(Subject):
    """A command, run natively in its own process group; model data is named by MCE_MODEL_DIR (the
    project's native containers read it) and multi-model data lives under a folder of the checker's."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.name = " ".join(self.argv)
        self.ports = allocate()

    def start(self, env: dict[str, str], model: Path | None, models: Path | None, log: Path) -> None:
        env = {**os.environ, **env}
        if model is not None:
            env["MCE_MODEL_DIR"] = str(model)
        self.process = ContainerProcess(self.argv, env=env, log_path=log)

    def listening(self) -> set[int] | None:
        inodes: set[str] = set()
        for pid in group_members(self.process.pid):
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except OSError:
                continue
        return {port for port, inode in _listening_sockets(Path("/proc/net")) if inode in inodes}

    def models_path(self, models: Path) -> Path:
        return models


class Image(Subject):
    """An image, run as SageMaker runs it: `docker run IMAGE serve`, its model data read-only at
    /opt/ml/model, multi-model data at /opt/ml/models; its port published on 127.0.0.1."""

    def __init__(self, image: docker.Image) -> None:
        self.image = image
        self.name = image.name
        self.ports = allocate()
        self.container = f"mce-check-{uuid.uuid4().hex[:12]}"

    def start(self, env: dict[str, str], model: Path | None, models: Path | None, log: Path) -> None:
        mounts = []
        if model is not None:
            mounts.append((model.resolve(), docker.MODEL_DIR, True))
        if models is not None:
            mounts.append((models.resolve(), "/opt/ml/models", False))
        argv = docker.run_argv(
            name=self.container,
            image=self.image.name,
            args=["serve"],
            hostname="model.aws.local",
            env=env,
            publish=(self.port, self.port),
            mounts=mounts,
            run_dir=log.parent,
        )
        self.process = ContainerProcess(argv, env=dict(os.environ), log_path=log)

    def listening(self) -> set[int] | None:
        found = subprocess.run(
            [docker.DOCKER, "inspect", "--format", "{{.State.Pid}}", self.container],
            capture_output=True,
            text=True,
            timeout=docker.INSPECT_TIMEOUT,
        )
        pid = found.stdout.strip()
        if found.returncode != 0 or not pid.isdigit() or pid == "0":
            return None
        try:  # the container's own network namespace, seen through its first process
            return {port for port, _ in _listening_sockets(Path(f"/proc/{pid}/net"))}
        except OSError:
            return None

    def models_path(self, models: Path) -> Path:
        return Path("/opt/ml/models")

    def cleanup(self) -> None:
        subprocess.run(docker.remove_argv(self.container), capture_output=True, timeout=60)


def check(subject: Subject, options: Options) -> Report:
    """Start the container, try every rule, stop it; the findings, in the order they were tried."""
    report = Report(subject.name)
    work = Path(tempfile.mkdtemp(prefix="mce-check-"))
    try:
        if isinstance(subject, Image):
            _image_rules(subject.image, report)
            options.multi_model = options.multi_model or subject.image.labels.get(MULTI_MODEL_LABEL) == "true"
        models = work / "models" if options.multi_model else None
        if models is not None:
            models.mkdir()
        env = {
            **subject.ports.environment(),
            **({"SAGEMAKER_MULTI_MODEL": "true"} if options.multi_model else {}),
            **options.env,
        }
        log = work / "container.log"
        try:
            subject.start(env, options.model, models, log)
        except OSError as exc:  # no such command, not executable
            report.add("/ping", False, f"it could not be started: {exc.strerror or exc}", CONTAINER)
            return report
        try:
            if _healthy(subject, options, report, log):
                _ports(subject, report)
                if options.multi_model:  # invoked per model (/models/{name}/invoke), never at /invocations
                    _multi_model(subject, options, report, models)
                else:
                    _invocations(subject, options, report, "/invocations", {})
            else:
                for rule in ("other ports", "/invocations", "concurrent requests"):
                    report.add(rule, None, "not tried: the container never became healthy", CONTAINER)
        finally:
            _stop(subject, options, report)
    finally:
        subject.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return report


def _image_rules(image: docker.Image, report: Report) -> None:
    entrypoint = docker.entrypoint(image.name)
    if not entrypoint:
        report.add(
            "serve", False, "no ENTRYPOINT: `docker run IMAGE serve` would run `serve` itself", CONTAINER
        )
    elif entrypoint[0] in TINI or Path(entrypoint[0]).name == "tini":
        report.add(
            "serve", False, f"ENTRYPOINT is tini ({entrypoint[0]}), which SageMaker does not allow", CONTAINER
        )
    else:
        report.add(
            "serve", True, f"ENTRYPOINT {json.dumps(entrypoint)} gets `serve` as its argument", CONTAINER
        )
    label = image.labels.get(docker.BIND_TO_PORT_LABEL)
    report.add(
        "bind-to-port label",
        label == "true",
        f"{docker.BIND_TO_PORT_LABEL}={label}"
        if label is not None
        else f"no {docker.BIND_TO_PORT_LABEL}=true label: a multi-container endpoint refuses the image",
        MULTI_CONTAINER,
    )


def _healthy(subject: Subject, options: Options, report: Report, log: Path) -> bool:
    """/ping answers 200 on SAGEMAKER_BIND_TO_PORT within the start-up window (each within 2 s)."""
    began = time.monotonic()
    deadline = began + options.startup_timeout
    last = "no answer"
    while time.monotonic() < deadline:
        code = subject.process.returncode
        if code is not None:
            words = _tail(log)
            report.add(
                "/ping",
                False,
                f"the container exited with code {code} before it was healthy{words}",
                CONTAINER,
            )
            _port_rule(subject, report, listening=set())
            return False
        try:
            status, _, took = _request(subject.port, "GET", "/ping", timeout=PING_TIMEOUT)
        except OSError as exc:
            last = _reason(exc)
        else:
            if status == 200:
                report.add(
                    "/ping",
                    True,
                    f"200 after {time.monotonic() - began:.1f} s (in {took * 1000:.0f} ms)",
                    CONTAINER,
                )
                return True
            last = f"status {status}"
        time.sleep(0.25)  # a container's readiness has no event to wait on: it is asked, with a deadline
    report.add("/ping", False, f"no 200 within {options.startup_timeout:g} s (last: {last})", CONTAINER)
    _port_rule(subject, report, subject.listening())
    return False


def _port_rule(subject: Subject, report: Report, listening: set[int] | None) -> None:
    """Why /ping was not reached, as far as the ports tell."""
    if not listening:
        report.add("SAGEMAKER_BIND_TO_PORT", None, "it listened on no port", MULTI_CONTAINER)
    elif subject.port not in listening:
        ports = ", ".join(map(str, sorted(listening)))
        report.add(
            "SAGEMAKER_BIND_TO_PORT",
            False,
            f"it listens on {ports}, not on SAGEMAKER_BIND_TO_PORT={subject.port} (8080 is only the default "
            "when the variable is absent)",
            MULTI_CONTAINER,
        )


def _ports(subject: Subject, report: Report) -> None:
    report.add(
        "SAGEMAKER_BIND_TO_PORT", True, f"serves on {subject.port}, the port it was given", MULTI_CONTAINER
    )
    listening = subject.listening()
    if listening is None:
        report.add("other ports", None, "could not see what it listens on", MULTI_CONTAINER)
        return
    low, high = subject.ports.first, subject.ports.last
    outside = sorted(p for p in listening - {subject.port} if not low <= p <= high)
    inside = sorted(p for p in listening - {subject.port} if low <= p <= high)
    if outside:
        report.add(
            "other ports",
            False,
            f"it also listens on {', '.join(map(str, outside))}, outside "
            f"SAGEMAKER_SAFE_PORT_RANGE={low}-{high}",
            MULTI_CONTAINER,
        )
    else:
        said = f"{', '.join(map(str, inside))}, within {low}-{high}" if inside else "none"
        report.add("other ports", True, said, MULTI_CONTAINER)


def _invocations(
    subject: Subject, options: Options, report: Report, path: str, extra: dict[str, str]
) -> None:
    """The sample request at `path` answers 2xx within the invocation timeout, alone and with others."""
    headers = {"Content-Type": options.content_type, **({"Accept": options.accept} if options.accept else {})}
    headers.update(extra)

    def invoke() -> tuple[int, bytes, float]:
        return _request(subject.port, "POST", path, options.body, headers, options.invoke_timeout)

    try:
        status, body, took = invoke()
    except OSError as exc:
        report.add(path, False, f"no answer within {options.invoke_timeout:g} s ({_reason(exc)})", CONTAINER)
        report.add("concurrent requests", None, f"not tried: {path} does not answer", CONTAINER)
        return
    if not 200 <= status < 300:
        report.add(path, False, f"status {status} for the sample request: {_shown(body)}", CONTAINER)
    else:
        report.add(path, True, f"{status} in {took * 1000:.0f} ms, {len(body)} bytes", CONTAINER)
    _concurrent(subject, invoke, status, report)


def _concurrent(
    subject: Subject, invoke: Callable[[], tuple[int, bytes, float]], alone: int, report: Report
) -> None:
    """CONCURRENT invocations at once, and /ping while they run: each invocation answered as the one
    alone was, and the pings within their 2 s."""
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT + 1) as pool:
        calls = [pool.submit(invoke) for _ in range(CONCURRENT)]
        ping = pool.submit(_request, subject.port, "GET", "/ping", b"", {}, PING_TIMEOUT)
        answers, failures = [], []
        for call in calls:
            try:
                answers.append(call.result())
            except OSError as exc:
                failures.append(_reason(exc))
        try:
            ping_status, _, ping_took = ping.result()
            pinged = f"/ping {ping_status} in {ping_took * 1000:.0f} ms"
            ping_ok = ping_status == 200
        except OSError as exc:
            pinged, ping_ok = f"/ping while they ran: {_reason(exc)}", False
    odd = [status for status, _, _ in answers if status != alone]
    ok = not failures and not odd and ping_ok
    if ok:
        slowest = max(took for _, _, took in answers)
        why = f"{CONCURRENT} at once, each {alone} (slowest {slowest * 1000:.0f} ms); {pinged}"
    else:
        problems = [*failures, *(f"status {s} (alone: {alone})" for s in odd)]
        why = "; ".join([*problems[:3], pinged])
    report.add("concurrent requests", ok, why, CONTAINER)


def _multi_model(subject: Subject, options: Options, report: Report, models: Path | None) -> None:
    assert models is not None
    if options.model is None:
        report.add("multi-model API", None, "not tried: give --model DIR, a model to load", MULTI_MODEL)
        return
    name = "mce-check-model"
    shutil.copytree(options.model, models / name / "model")
    url = str(subject.models_path(models) / name / "model")
    port = subject.port
    headers = {"Content-Type": "application/json"}
    load = json.dumps({"model_name": name, "url": url}).encode()
    target = {"X-Amzn-SageMaker-Target-Model": f"{name}.tar.gz"}
    invoke_headers = {"Content-Type": options.content_type, **target}

    def step(rule: str, method: str, path: str, body: bytes, want: int, head: dict[str, str]) -> bytes | None:
        try:
            status, answer, took = _request(port, method, path, body, head, options.invoke_timeout)
        except OSError as exc:
            report.add(rule, False, f"{method} {path}: {_reason(exc)}", MULTI_MODEL)
            return None
        ok = status == want
        why = f"{method} {path}: {status}" + ("" if ok else f", not {want}: {_shown(answer)}")
        report.add(rule, ok, why + (f" in {took * 1000:.0f} ms" if ok else ""), MULTI_MODEL)
        return answer if ok else None

    if step("load", "POST", "/models", load, 200, headers) is None:
        return
    step("load again: 409", "POST", "/models", load, 409, headers)
    listed = step("list", "GET", "/models", b"", 200, {"Accept": "application/json"})
    if listed is not None:
        try:
            names = [m.get("modelName") for m in json.loads(listed).get("models", [])]
        except (ValueError, AttributeError):
            names = []
        if name not in names:
            report.findings[-1] = Finding(
                "list", "fail", f"GET /models does not list {name}: {_shown(listed)}", MULTI_MODEL
            )
    step("get", "GET", f"/models/{name}", b"", 200, {})
    _invocations(subject, options, report, f"/models/{name}/invoke", target)
    step("unknown model: 404", "POST", "/models/mce-check-absent/invoke", options.body, 404, invoke_headers)
    step("unload", "DELETE", f"/models/{name}", b"", 200, {})
    step("get after unload: 404", "GET", f"/models/{name}", b"", 404, {})
    report.add(
        "out of memory: 507", None, "not provoked (it takes exhausting the container's memory)", MULTI_MODEL
    )


def _stop(subject: Subject, options: Options, report: Report) -> None:
    process = subject.process
    if process.returncode is not None:
        report.add("SIGTERM", None, f"it had already exited (code {process.returncode})", CONTAINER)
        return
    began = time.monotonic()
    code = process.stop(options.stop_grace)
    took = time.monotonic() - began
    if took >= options.stop_grace:
        report.add(
            "SIGTERM",
            False,
            f"still running {options.stop_grace:g} s after SIGTERM: SIGKILL ended it"
            + (
                " (in a container the ENTRYPOINT's process is PID 1, which SIGTERM does not stop unless it "
                "handles the signal)"
                if isinstance(subject, Image)
                else ""
            ),
            CONTAINER,
        )
    else:
        report.add("SIGTERM", True, f"exited {took:.1f} s after SIGTERM (code {code})", CONTAINER)


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = PING_TIMEOUT,
) -> tuple[int, bytes, float]:
    """One request on a new connection: (status, body, seconds). OSError (a timeout included) if none."""
    began = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        answer = response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"not an HTTP answer ({exc.__class__.__name__})") from exc
    finally:
        connection.close()
    return response.status, answer, time.monotonic() - began


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return exc.strerror or str(exc) or exc.__class__.__name__


def _listening_sockets(net: Path) -> list[tuple[int, str]]:
    """(port, socket inode) of every TCP socket in LISTEN state in a /proc/<pid>/net folder."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (net / name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # TCP_LISTEN
                found.append((int(fields[1].rsplit(":", 1)[1], 16), fields[9]))
    return found


def _tail(log: Path, lines: int = 5) -> str:
    try:
        last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(last)) if last else ""


def _shown(body: bytes, limit: int = 160) -> str:
    """A body quoted in a finding: one line, at most `limit` characters."""
    return " ".join(body[:limit].decode("utf-8", "replace").split()) or "(empty)"
