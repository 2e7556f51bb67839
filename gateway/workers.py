"""`mce serve --workers N`: one gateway process per core, every one listening on the same port.

    mce serve DOC --workers N        the supervisor: starts N worker processes and waits
      └─ mce serve DOC (worker i)    an ordinary gateway, listening with SO_REUSEPORT: the kernel spreads
                                     new connections over the N listeners; each worker also answers its
                                     own metrics on a private Unix socket

The first worker is started alone, so the port the OS chooses for `--port 0` is known; the others listen on
it. `GET /metrics` on any worker is the sum over all of them: the worker that is scraped reads its siblings'
expositions from their sockets (in a folder only this user can open) and adds them up
(`gateway.metrics.merge_expositions`). SIGTERM or SIGINT to the supervisor is passed to every worker, which
finishes its answers in progress as a single gateway does; a worker that dies stops the others and the
supervisor exits non-zero, saying which.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

SIBLING_TIMEOUT = 2.0  # seconds a scrape waits for each sibling's metrics before leaving it out
START_TIMEOUT = 60.0  # seconds each worker has to say it listens
WAIT_STEP = 0.2  # seconds between looks at a signal while workers start
_LISTENING = re.compile(r"listening on (http://\S+:(\d+))")


class Siblings:
    """A worker's side: its own metrics on `folder/worker-<index>.sock`, and its siblings' on theirs."""

    def __init__(self, folder: Path, index: int, count: int) -> None:
        self.folder, self.index, self.count = folder, index, count
        self._server: asyncio.AbstractServer | None = None

    def socket(self, index: int) -> Path:
        return self.folder / f"worker-{index}.sock"

    async def serve(self, own: Callable[[], bytes]) -> None:
        """Answer each connection on this worker's socket with `own()` (its exposition), then close it."""

        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                writer.write(own())
                await writer.drain()
            writer.close()

        path = self.socket(self.index)
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(answer, str(path))
        path.chmod(0o600)

    async def gather(self) -> list[bytes]:
        """Every sibling's exposition that arrives within SIBLING_TIMEOUT (a worker that is gone is left
        out, and logged)."""
        others = [i for i in range(self.count) if i != self.index]
        read = await asyncio.gather(*(self._read(i) for i in others), return_exceptions=True)
        found = []
        for index, got in zip(others, read, strict=True):
            if isinstance(got, bytes):
                found.append(got)
            else:
                logger.warning("worker %d's metrics are left out of this scrape: %s", index, got)
        return found

    async def _read(self, index: int) -> bytes:
        async with asyncio.timeout(SIBLING_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(self.socket(index)))
            try:
                return await reader.read()
            finally:
                writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self.socket(self.index).unlink(missing_ok=True)


def supervise(arguments: Sequence[str], count: int, port: int) -> int:
    """Run `mce ARGUMENTS` as `count` workers on one port (`port` 0: the OS chooses, once); the exit code."""
    folder = Path(tempfile.mkdtemp(prefix="mce-workers-"))  # 0700: only this user reads the sockets
    workers: list[subprocess.Popen[str]] = []
    stop = threading.Event()  # a signal came, or a worker ended
    signalled: list[int] = []
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def on_signal(signum: int, _: object) -> None:
        signalled.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def start(index: int, on_port: int) -> None:
        argv = [sys.executable, "-m", "gateway", *arguments, "--port", str(on_port)]
        argv += ["--workers", "1", "--worker-dir", str(folder), "--worker-index", f"{index}/{count}"]
        worker = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_die_with_supervisor
        )
        workers.append(worker)
        threading.Thread(target=_relay, args=(index, worker, lines, stop), daemon=True).start()

    def listening(index: int) -> re.Match[str] | str:
        """Until worker `index` says where it listens; else why not."""
        deadline = time.monotonic() + START_TIMEOUT
        while not signalled:
            try:  # in short waits: a signal only sets a flag, and must not wait out the start-up window
                said, line = lines.get(timeout=WAIT_STEP)
            except queue.Empty:
                if time.monotonic() > deadline:
                    return f"worker {index} did not start listening within {START_TIMEOUT:g} s"
                continue
            if line is None:
                return f"worker {said} exited ({workers[said].returncode}) while starting"
            found = _LISTENING.search(line)
            if said == index and found is not None:
                return found
        return "stopped"

    try:
        start(0, port)
        first = listening(0)
        for index in range(1, count):
            if isinstance(first, str):
                break
            start(index, int(first.group(2)))
            if isinstance(started := listening(index), str):
                first = started
        if isinstance(first, str):
            return _stopped(workers, None if signalled else first)
        print(f"mce-gateway: {count} workers listening on {first.group(1)}", flush=True)
        stop.wait()
        ended = [i for i, worker in enumerate(workers) if worker.poll() is not None]
        if ended and not signalled:
            return _stopped(workers, f"worker {ended[0]} exited ({workers[ended[0]].returncode})")
        return _stopped(workers, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(folder, ignore_errors=True)


def _relay(
    index: int,
    worker: subprocess.Popen[str],
    lines: queue.Queue[tuple[int, str | None]],
    stop: threading.Event,
) -> None:
    """Worker `index`'s standard output, line by line, to the supervisor (and on to its own); its end stops
    the supervisor's wait."""
    assert worker.stdout is not None
    for line in worker.stdout:
        lines.put((index, line))
        if not _LISTENING.search(line):
            sys.stdout.write(line)
            sys.stdout.flush()
    worker.wait()
    lines.put((index, None))
    stop.set()


def _die_with_supervisor() -> None:
    """In a worker, before it runs: SIGTERM when the supervisor dies, however it dies (Linux's
    PR_SET_PDEATHSIG), so a killed supervisor leaves no worker holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _stopped(workers: list[subprocess.Popen[str]], failure: str | None) -> int:
    """SIGTERM to every worker still running, and wait for each; 0 when all stopped cleanly and nothing
    failed."""
    if failure is not None:
        print(f"mce: {failure}; stopping the other workers", file=sys.stderr)
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    codes = [worker.wait() for worker in workers]
    return 1 if failure is not None or any(codes) else 0


def worker_index(value: str) -> tuple[int, int]:
    """`--worker-index I/N` (set by the supervisor)."""
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(value)
    return int(index), int(count)
