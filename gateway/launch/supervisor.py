"""`mce up`'s supervisor: start each container natively as SageMaker would, watch it, restart it, stop it.

Per container without a `Backend.Url`: a port allocation (SAGEMAKER_BIND_TO_PORT, SAGEMAKER_SAFE_PORT_RANGE),
its model data made local (a MultiModel container's models are the gateway's to load, gateway.multimodel),
its `Environment`, SAGEMAKER_MULTI_MODEL when it is a MultiModel container, and
its `Launch.Command` run in a process group of its own, output kept in `<run dir>/<hostname>.log`. Start-up
ends when every container passes its health check (2 s per check) within the start-up window (SageMaker's
ContainerStartupHealthCheckTimeoutInSeconds, 240 s by default); a container that exits or never gets ready
fails the start with its last log lines. Once up, a container that exits is restarted with backoff.
Stopping is SIGTERM, then SIGKILL after the grace period, then whatever is left of its process group.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gateway.backends import Backend
from gateway.endpoint import BackendSpec, ContainerMode, Endpoint
from gateway.launch import layout
from gateway.launch.modeldata import ModelDataError, model_directory
from gateway.launch.ports import PortAllocation, allocate
from gateway.launch.process import group_members, kill_group

STARTUP_TIMEOUT = 240.0  # ContainerStartupHealthCheckTimeoutInSeconds' default (spec §2.1, §5)
STOP_GRACE = 30.0  # SIGTERM, then SIGKILL 30 s later (spec §5)
CHECK_INTERVAL = 0.5
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0
LAST_LINES = 30


class LaunchError(Exception):
    """A container cannot be planned or started; the message names it and says what to do."""


@dataclass
class ContainerPlan:
    """Everything it takes to start one container natively."""

    index: int
    name: str
    argv: list[str]
    prepare: list[str] | None
    env: dict[str, str]
    ports: PortAllocation
    log_path: Path


def plan(endpoint: Endpoint, document_dir: Path, run_dir: Path, *, taken_ports: set[int]) -> tuple[Endpoint, list[ContainerPlan]]:
    """The endpoint as it will be served (launched containers' addresses filled in) and how to launch them."""
    plans: list[ContainerPlan] = []
    served: dict[int, BackendSpec] = {}
    taken = set(taken_ports)
    for index, container in enumerate(endpoint.containers):
        backend = container.Backend
        name = endpoint.hostname(index)
        if backend.Url is not None:
            continue
        if backend.Launch is None:
            raise LaunchError(
                f"{name}: Backend has neither Url (a running container) nor Launch.Command (how to start it)"
            )
        ports = allocate(taken=taken)
        taken.update(range(ports.bind, ports.last + 1))
        container_dir = run_dir / name
        env = {
            **os.environ,  # PATH, JAVA_HOME, ...: a native process needs its host's environment
            **container.Environment,
            **ports.environment(),
            "MCE_RUN_DIR": str(container_dir / "runtime"),
            "MCE_BIND_ADDRESS": "127.0.0.1",
            "MCE_PYTHON": sys.executable,
        }
        if container.Mode is ContainerMode.MULTI_MODEL:
            env["SAGEMAKER_MULTI_MODEL"] = "true"
        if backend.Model is not None:
            env.setdefault("MCE_MODEL_NAME", backend.Model)
        if container.ModelDataUrl is not None and container.Mode is not ContainerMode.MULTI_MODEL:
            try:
                env["MCE_MODEL_DIR"] = str(model_directory(container.ModelDataUrl, document_dir, container_dir))
            except ModelDataError as exc:
                if backend.Launch.Prepare is None:  # a Prepare step may be what builds it
                    raise LaunchError(f"{name}: {exc}") from None
                env["MCE_MODEL_DIR"] = str((document_dir / container.ModelDataUrl).resolve())
        found = layout.addresses(backend.Protocol, ports)
        served[index] = backend.model_copy(update={"Url": found.url, "ManagementUrl": found.management_url})
        plans.append(
            ContainerPlan(
                index=index,
                name=name,
                argv=_argv(backend.Launch.Command, document_dir),
                prepare=_argv(backend.Launch.Prepare, document_dir) if backend.Launch.Prepare else None,
                env=env,
                ports=ports,
                log_path=run_dir / f"{name}.log",
            )
        )
    return endpoint.with_backends(served), plans


def _argv(argv: list[str], base: Path) -> list[str]:
    """A leading `python` is this interpreter; arguments naming files next to the document become absolute."""
    resolved = [sys.executable if i == 0 and arg in ("python", "python3") else arg for i, arg in enumerate(argv)]
    return [str((base / arg).resolve()) if not os.path.isabs(arg) and (base / arg).exists() else arg for arg in resolved]


@dataclass
class Status:
    state: str = "waiting"
    detail: str = ""
    since: float = field(default_factory=time.monotonic)
    restarts: int = 0


class ManagedContainer:
    """One launched container: its process, its log, its restarts."""

    def __init__(self, plan: ContainerPlan, backend: Backend, console: Console) -> None:
        self.plan = plan
        self.name = plan.name
        self.backend = backend
        self.console = console
        self.status = Status()
        self.last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        self.attached = False  # once up, output is echoed to the console, prefixed by the hostname
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stopping = False
        self._log = open(plan.log_path, "ab")  # noqa: SIM115  (closed in stop())

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    def process_group(self) -> int | None:
        """The running container's process group (its main process started a session of its own)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def prepare(self) -> None:
        if self.plan.prepare is None:
            return
        self.set_state("preparing", " ".join(Path(a).name for a in self.plan.prepare[:2]))
        try:
            process = self._process = await self._spawn(self.plan.prepare)
        except OSError as exc:
            raise LaunchError(f"{self.name}: cannot run its Prepare step {self.plan.prepare[0]}: {exc.strerror}") from None
        code = await process.wait()
        if self._pump is not None:
            await self._pump
        if code != 0:
            raise LaunchError(self.failure(f"its Prepare step exited with {code}"))

    async def start(self) -> None:
        self.set_state("starting")
        try:
            self._process = await self._spawn(self.plan.argv)
        except OSError as exc:
            raise LaunchError(
                f"{self.name}: cannot start {self.plan.argv[0]}: {exc.strerror} (is it installed, and on PATH?)"
            ) from None

    async def wait_ready(self, deadline: float) -> None:
        """Until the health check passes; LaunchError if the process exits or the window closes first."""
        assert self._process is not None
        while True:
            if self._process.returncode is not None:
                if self._pump is not None:
                    await self._pump
                raise LaunchError(self.failure(f"it exited with code {self._process.returncode} while starting"))
            reason = await self.backend.check_health()
            if reason is None:
                self.set_state("ready", f"in {time.monotonic() - self.status.since:.1f} s")
                return
            self.status.detail = reason
            if time.monotonic() > deadline:
                raise LaunchError(self.failure(f"not ready within the start-up window ({reason})"))
            self.console.refresh()
            await asyncio.sleep(CHECK_INTERVAL)

    async def watch(self) -> None:
        """Restart the container whenever it exits, with backoff, until stopped."""
        backoff = BACKOFF_FIRST
        while not self._stopping:
            assert self._process is not None
            started = time.monotonic()
            code = await self._process.wait()
            if self._stopping:
                return
            kill_group(self._process.pid)  # whatever it left behind goes with it
            backoff = BACKOFF_FIRST if time.monotonic() - started > STABLE_AFTER else backoff
            self.status.restarts += 1
            self.console.message(
                f"{self.name} exited with code {code}; restarting in {backoff:g} s (restart {self.status.restarts})"
            )
            self.set_state("restarting")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            if self._stopping:
                return
            await self.start()
            self.console.message(f"{self.name} restarted (pid {self._process.pid})")

    async def stop(self, grace: float) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process is not None:
            kill_group(process.pid)
            deadline = time.monotonic() + 10
            while group_members(process.pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 5)
        self._log.close()
        self.set_state("stopped")

    def failure(self, what: str) -> str:
        tail = "\n".join(f"    {line}" for line in self.last_lines) or "    (no output)"
        return f"container {self.name} failed: {what}. Last lines of {self.plan.log_path}:\n{tail}"

    def set_state(self, state: str, detail: str = "") -> None:
        self.status.state, self.status.detail, self.status.since = state, detail, time.monotonic()
        self.console.refresh()

    async def _spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=self.plan.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: the handle for stopping all it starts
        )
        assert process.stdout is not None
        self._pump = asyncio.create_task(self._copy_output(process.stdout))
        return process

    async def _copy_output(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the stream's limit: take what is there
                line = await stream.read(65536)
            if not line:
                return
            self._log.write(line)
            self._log.flush()
            text = line.decode("utf-8", "replace").rstrip()
            self.last_lines.append(text)
            if self.attached:
                self.console.log(self.name, text)


class Console:
    """What `mce up` shows: a status line per container while starting, then logs prefixed by hostname.

    On a terminal the status lines are redrawn in place; otherwise each change is one plain line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.containers: list[ManagedContainer] = []
        self._drawn = 0
        self._last: dict[str, tuple[str, str]] = {}
        self._width = max((len(c.name) for c in self.containers), default=12)

    def track(self, containers: list[ManagedContainer]) -> None:
        self.containers = containers
        self._width = max((len(c.name) for c in containers), default=12)

    def refresh(self) -> None:
        if self.tty:
            self._redraw()
            return
        for container in self.containers:
            seen = (container.status.state, container.status.detail if container.status.state != "starting" else "")
            if self._last.get(container.name) != seen:
                self._last[container.name] = seen
                self._write(self._status_line(container) + "\n")

    def finish_status(self) -> None:
        if self.tty:
            self._redraw()
        self._drawn = 0

    def message(self, text: str) -> None:
        self._clear()
        self._write(f"mce: {text}\n")

    def log(self, name: str, text: str) -> None:
        self._write(f"{name:<{self._width}} | {text}\n")

    def _status_line(self, container: ManagedContainer) -> str:
        status = container.status
        elapsed = time.monotonic() - status.since
        mark = {"ready": "+", "stopped": "-"}.get(status.state, "*")
        detail = status.detail if status.state != "starting" else f"{elapsed:4.1f} s  {status.detail}"
        return f" {mark} {container.name:<{self._width}}  {status.state:<10} {detail}".rstrip()[:160]

    def _redraw(self) -> None:
        self._clear()
        text = "".join(f"\x1b[2K{self._status_line(c)}\n" for c in self.containers)
        self._write(text)
        self._drawn = len(self.containers)

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class Supervisor:
    """All launched containers of an endpoint."""

    def __init__(self, plans: list[ContainerPlan], backends: dict[str, Backend], console: Console) -> None:
        self.console = console
        self.containers = [ManagedContainer(p, backends[p.name], console) for p in plans]
        console.track(self.containers)
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self, startup_timeout: float) -> None:
        """Prepare, start and wait for every container; LaunchError (with the culprit's log) on failure."""
        for container in self.containers:
            await container.prepare()
        for container in self.containers:
            await container.start()
        deadline = time.monotonic() + startup_timeout
        waits = [asyncio.create_task(c.wait_ready(deadline)) for c in self.containers]
        try:
            for finished in asyncio.as_completed(waits):
                await finished
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        self.console.finish_status()

    def watch(self) -> None:
        """From now on, echo output and restart containers that exit."""
        for container in self.containers:
            container.attached = True
            task = asyncio.create_task(container.watch())
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*(c.stop(grace) for c in self.containers), return_exceptions=True)

