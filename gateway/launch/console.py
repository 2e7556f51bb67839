"""What `mce up` shows: a status line per container while starting, then logs prefixed by hostname."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TextIO


@dataclass
class Status:
    state: str = "waiting"
    detail: str = ""
    since: float = field(default_factory=time.monotonic)
    restarts: int = 0


class Shown(Protocol):
    """A container as the console shows it."""

    name: str
    status: Status


class Console:
    """What `mce up` shows: a status line per container while starting, then logs prefixed by hostname.

    On a terminal the status lines are redrawn in place; otherwise each change is one plain line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.containers: Sequence[Shown] = ()
        self._drawn = 0
        self._last: dict[str, tuple[str, str]] = {}
        self._width = 12

    def track(self, containers: Sequence[Shown]) -> None:
        self.containers = containers
        self._width = max((len(c.name) for c in containers), default=12)

    def refresh(self) -> None:
        if self.tty:
            self._redraw()
            return
        for container in self.containers:
            seen = (
                container.status.state,
                container.status.detail if container.status.state != "starting" else "",
            )
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

    def _status_line(self, container: Shown) -> str:
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
