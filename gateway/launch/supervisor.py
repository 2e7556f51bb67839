"""`mce up`'s supervisor: start each planned container (gateway.launch.plan), watch it, restart it, stop it.

Each container's command runs in a process group of its own (gateway.launch.process), output kept in
`<run dir>/<hostname>.log` and shown on the console (gateway.launch.console). Start-up ends when every
container passes its health check (2 s per check) within the start-up window (SageMaker's
ContainerStartupHealthCheckTimeoutInSeconds, 240 s by default); a container that exits or never gets ready
fails the start with its last log lines. Once up, a container that exits is restarted with backoff.
Stopping is `ContainerProcess.stop`: SIGTERM, then SIGKILL after the grace period, then whatever is left of
its process group.

A line of a container's output that starts with `WARNING_MARK` is a warning about how it runs here (a
framework container's version differs from the one installed, say): kept, for /metrics'
`mce_container_warning` and `mce status`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path

from gateway.backends import Backend
from gateway.launch.console import Console, Status
from gateway.launch.plan import ContainerPlan, LaunchError
from gateway.launch.process import STOP_GRACE, ContainerProcess, Registry

STARTUP_TIMEOUT = 240.0  # ContainerStartupHealthCheckTimeoutInSeconds' default (spec §2.1, §5)
CHECK_INTERVAL = 0.5
COLD_START_INTERVAL = 0.05  # a serverless variant's health checks while an invocation waits for them
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0
LAST_LINES = 30
WARNING_MARK = "[mce:warning] "
MAX_WARNINGS = 10  # kept per container, the first ones
CLEANUP_TIMEOUT = 30.0  # seconds for a cleanup command (docker rm --force)

__all__ = ["STARTUP_TIMEOUT", "STOP_GRACE", "WARNING_MARK", "LaunchError", "ManagedContainer", "Supervisor"]


class ManagedContainer:
    """One launched container: its process, its log, its restarts."""

    def __init__(
        self, plan: ContainerPlan, backend: Backend, console: Console, registry: Registry | None = None
    ) -> None:
        self.plan = plan
        self.registry = registry
        self.name = plan.name
        self.backend = backend
        self.console = console
        self.status = Status()
        self.last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        self.warnings: list[str] = []  # the container's own warnings (WARNING_MARK), without the mark
        self.attached = False  # once up, output is echoed to the console, prefixed by the hostname
        self._process: ContainerProcess | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stopping = False
        self._log = open(plan.log_path, "ab")

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
            raise LaunchError(
                f"{self.name}: cannot run its Prepare step {self.plan.prepare[0]}: {exc.strerror}"
            ) from None
        code = await process.exited()
        if self._pump is not None:
            await self._pump
        if code != 0:
            raise LaunchError(self.failure(f"its Prepare step exited with {code}"))

    async def sleep(self, grace: float) -> None:
        """Stop the container until `wake` (a serverless variant with nothing to do); its log stays open."""
        await self._end(grace)
        self.set_state("idle", "no invocations: stopped until the next one")

    async def wake(self) -> None:
        self._stopping = False
        await self.start()

    async def start(self) -> None:
        self.set_state("starting")
        await self.clean_up()
        try:
            self._process = await self._spawn(self.plan.argv)
        except OSError as exc:
            raise LaunchError(
                f"{self.name}: cannot start {self.plan.argv[0]}: {exc.strerror} (is it installed, and on "
                "PATH?)"
            ) from None

    async def wait_ready(self, deadline: float, interval: float = CHECK_INTERVAL) -> None:
        """Until the health check passes (tried every `interval` seconds); LaunchError if the process exits
        or the window closes first."""
        assert self._process is not None
        while True:
            if self._process.returncode is not None:
                if self._pump is not None:
                    await self._pump
                raise LaunchError(
                    self.failure(f"it exited with code {self._process.returncode} while starting")
                )
            reason = await self.backend.check_health()
            if reason is None:
                self.set_state("ready", f"in {time.monotonic() - self.status.since:.1f} s")
                return
            self.status.detail = reason
            if time.monotonic() > deadline:
                raise LaunchError(self.failure(f"not ready within the start-up window ({reason})"))
            self.console.refresh()
            await asyncio.sleep(interval)

    async def watch(self) -> None:
        """Restart the container whenever it exits, with backoff, until stopped."""
        backoff = BACKOFF_FIRST
        while not self._stopping:
            assert self._process is not None
            started = time.monotonic()
            code = await self._process.exited()
            if self._stopping:
                return
            self._process.kill_group()  # whatever it left behind goes with it
            await self.clean_up()
            backoff = BACKOFF_FIRST if time.monotonic() - started > STABLE_AFTER else backoff
            self.status.restarts += 1
            self.console.message(
                f"{self.name} exited with code {code}; restarting in {backoff:g} s (restart "
                f"{self.status.restarts})"
            )
            self.set_state("restarting")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            if self._stopping:
                return
            await self.start()
            self.console.message(f"{self.name} restarted (pid {self._process.pid})")

    async def stop(self, grace: float) -> None:
        await self._end(grace)
        self._log.close()
        self.set_state("stopped")

    async def _end(self, grace: float) -> None:
        """The process stopped (SIGTERM, SIGKILL after `grace`), what it left removed, its output read."""
        self._stopping = True
        if self._process is not None:
            await self._process.terminate(grace)
            await self.clean_up()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._pump, 5)

    async def clean_up(self) -> None:
        """The plan's cleanup command (a Docker container removed, if the engine still has it); bounded."""
        if self.plan.cleanup is None:
            return
        try:
            process = await asyncio.create_subprocess_exec(
                *self.plan.cleanup,
                env=self.plan.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return  # the command that started it is gone too: nothing it started can be left
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def failure(self, what: str) -> str:
        tail = "\n".join(f"    {line}" for line in self.last_lines) or "    (no output)"
        return f"container {self.name} failed: {what}. Last lines of {self.plan.log_path}:\n{tail}"

    def set_state(self, state: str, detail: str = "") -> None:
        self.status.state, self.status.detail, self.status.since = state, detail, time.monotonic()
        self.console.refresh()

    async def _spawn(self, argv: list[str]) -> ContainerProcess:
        process = ContainerProcess(argv, env=self.plan.env, registry=self.registry)
        assert process.output is not None
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.output)
        self._pump = asyncio.create_task(self._copy_output(reader))
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
            if text.startswith(WARNING_MARK) and len(self.warnings) < MAX_WARNINGS:
                warning = text[len(WARNING_MARK) :]
                if warning not in self.warnings:
                    self.warnings.append(warning)
            if self.attached:
                self.console.log(self.name, text)


class Supervisor:
    """All launched containers of an endpoint."""

    def __init__(
        self,
        plans: list[ContainerPlan],
        backends: dict[str, Backend],
        console: Console,
        registry: Registry | None = None,
    ) -> None:
        """`registry`: where each container's process group is written down while it runs."""
        self.console = console
        self.containers = [ManagedContainer(p, backends[p.name], console, registry) for p in plans]
        console.track(self.containers)
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self, startup_timeout: float) -> None:
        """Prepare, start and wait for every container; LaunchError (with the culprit's log) on failure."""
        for container in self.containers:
            await container.prepare()
        for container in self.containers:
            await container.start()
        await self._ready(startup_timeout)

    async def _ready(self, startup_timeout: float, interval: float = CHECK_INTERVAL) -> None:
        deadline = time.monotonic() + startup_timeout
        waits = [asyncio.create_task(c.wait_ready(deadline, interval)) for c in self.containers]
        try:
            for finished in asyncio.as_completed(waits):
                await finished
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        self.console.finish_status()

    async def sleep(self, grace: float = STOP_GRACE) -> None:
        """Stop every container, to be woken again (a serverless variant scaled to zero)."""
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*(c.sleep(grace) for c in self.containers), return_exceptions=True)

    async def wake(self, startup_timeout: float) -> None:
        """Start every container again and wait until they are healthy, then watch them (LaunchError, the
        containers stopped again, when one does not get so)."""
        for container in self.containers:
            await container.wake()
        try:
            await self._ready(startup_timeout, COLD_START_INTERVAL)  # an invocation is waiting
        except BaseException:
            await self.sleep()
            raise
        self.watch()

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
