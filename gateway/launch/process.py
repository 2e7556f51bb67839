"""One natively launched container: its command in a process group of its own, stopped without orphans.

Stop follows SageMaker's contract (spec §5): SIGTERM to the container's main process, SIGKILL after a grace
period (30 s by default). Whatever the main process started (TorchServe's launcher, java, its Python
workers) shares the process group, and the group is killed after the main process has gone, so a
container that mishandles SIGTERM still leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_GRACE = 30.0


class ContainerProcess:
    """A running container command; output goes to `log_path`."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the handle for stopping all it starts
            )
        self.pid = self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; then kill anything left in its process group."""
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._kill_group()
        return self._popen.returncode

    def leftovers(self) -> list[int]:
        """PIDs still alive in the container's process group (empty once stopped)."""
        return group_members(self.pid)

    def _kill_group(self) -> None:
        kill_group(self.pid)
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)  # reaping by init takes a moment; bounded


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
