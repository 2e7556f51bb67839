"""One natively launched container: its command in a process group of its own, stopped without orphans.

Stop follows SageMaker's contract (spec §5): SIGTERM to the container's main process, SIGKILL after a grace
period (30 s by default). Whatever the main process started (TorchServe's launcher, java, its Python
workers) shares the process group, and the group is killed after the main process has gone, so a
container that mishandles SIGTERM still leaves nothing behind.

A `Registry` writes each running container's process group down in the state folder (one small file per
group: its pid, its start time, its command), so that a later mce on the same state can stop what a killed
one left running (`Registry.stop_left`): the start time makes a recorded pid that the system has since given
to another process harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
        registry: Registry | None = None,
    ) -> None:
        self.argv = list(argv)
        self.registry = registry
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
        if registry is not None:
            registry.add(self.pid, self.argv)

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
        of its process group, waiting (bounded) until the group is gone. Cancelled midway, it kills the
        group at once and still reaps the process (in a thread), so no zombie is left."""
        try:
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
        except asyncio.CancelledError:
            self.kill_group()
            asyncio.get_running_loop().run_in_executor(None, self._popen.wait)
            raise
        self.kill_group()
        deadline = time.monotonic() + GROUP_GONE_WITHIN
        while self.leftovers() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # reaping by init takes a moment; bounded
        return self._popen.returncode

    def stop(self, grace: float = STOP_GRACE) -> int:
        """`terminate`, from code that runs no event loop (tests, scripts)."""
        return asyncio.run(self.terminate(grace))

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the container's process group; it is no longer recorded."""
        kill_group(self.pid)
        if self.registry is not None:
            self.registry.remove(self.pid)

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


def _started(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot: /proc/<pid>/stat's field 22); None if gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Registry:
    """The process groups of running containers, one file each in `folder` (the state's `_processes`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, pid: int, argv: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": pid, "started": _started(pid), "argv": argv}
        partial = self.folder / f".{pid}.json"
        partial.write_text(json.dumps(record))
        partial.replace(self.folder / f"{pid}.json")  # whole, or not there

    def remove(self, pid: int) -> None:
        (self.folder / f"{pid}.json").unlink(missing_ok=True)

    def stop_left(self) -> list[str]:
        """Stop every recorded group that still runs (an earlier mce was killed before it could): SIGTERM,
        SIGKILL after a moment; forget the records. What was stopped, one line each."""
        stopped = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
                pid, started, argv = int(record["pid"]), record["started"], list(record["argv"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if started is not None and _started(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5.0
                while group_members(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                kill_group(pid)
                stopped.append(f"pid {pid}: {' '.join(argv)[:200]}")
            path.unlink(missing_ok=True)
        return stopped
