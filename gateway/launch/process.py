"""One natively launched container: its command in a process group of its own, stopped without orphans.

Stop follows SageMaker's contract (spec §5): SIGTERM to the container's main process, SIGKILL after a grace
period (30 s by default). Whatever the main process started (TorchServe's launcher, java, its Python
workers) shares the process group, and the group is killed after the main process has gone, so a
container that mishandles SIGTERM still leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

STOP_GRACE = 30.0  # SIGTERM, then SIGKILL 30 s later (spec §5)
GROUP_GONE_WITHIN = 10.0  # seconds the killed group's processes may take to be reaped


class ContainerProcess:
    """A running container command: output to `log_path`, or, without one, to the pipe `output`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.output: IO[bytes] | None = None
        log = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")  # the child keeps its own descriptor; ours is closed below
        try:
            self._popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log if log is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the handle for stopping all it starts
            )
        finally:
            if log is not None:
                log.close()
        self.output = self._popen.stdout  # None when the output goes to the log
        self.pid = self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    async def exited(self) -> int:
        """Until the process exits (a pidfd read by the event loop: no thread, no child watcher)."""
        code = self._popen.poll()
        if code is not None:
            return code
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # no pidfd (an old kernel, a seccomp profile): ask every 0.1 s
            while (code := self._popen.poll()) is None:
                await asyncio.sleep(0.1)
            return code
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self._popen.wait()

    async def terminate(self, grace: float = STOP_GRACE) -> int:
        """The one way a container is stopped: SIGTERM, SIGKILL after `grace` seconds, then whatever is left
        of its process group, waiting (bounded) until the group is gone."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.exited()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._popen.kill()
                await self.exited()
        kill_group(self.pid)
        deadline = time.monotonic() + GROUP_GONE_WITHIN
        while self.leftovers() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # reaping by init takes a moment; bounded
        return self._popen.returncode

    def stop(self, grace: float = STOP_GRACE) -> int:
        """`terminate`, from code that runs no event loop (tests, scripts)."""
        return asyncio.run(self.terminate(grace))

    def leftovers(self) -> list[int]:
        """PIDs still alive in the container's process group (empty once stopped)."""
        return group_members(self.pid)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and not _zombie(entry):
                alive.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return alive


def group_usage(pgid: int) -> tuple[float, int]:
    """CPU seconds so far and resident bytes of every process in group `pgid`, from /proc."""
    cpu_seconds, rss = 0.0, 0
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat: the process group
                continue
            cpu_seconds += (int(fields[11]) + int(fields[12])) / ticks
            rss += int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue
    return cpu_seconds, rss


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in process group `pgid`."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _zombie(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
