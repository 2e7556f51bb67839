"""One request's timeline: when it was received whole, when each container was sent its request and
answered, and how it ended. Written by the request cycle (gateway.cycle); read by metrics, the
`Server-Timing` header and the access log (gateway.telemetry)."""

from __future__ import annotations

import time
from typing import Final

from gateway.errors import GatewayError

now: Final = time.perf_counter


class Timeline:
    """Times are `perf_counter` seconds. A container sent its request and not (yet) answered has only
    its `sent` time; `spent` counts it until `ended` (or now)."""

    __slots__ = ("_answered", "_sent", "ended", "failure", "received")

    def __init__(self) -> None:
        self.received = now()
        self._sent: list[float] = []
        self._answered: list[float] = []
        self.ended = 0.0
        self.failure: GatewayError | None = None

    def sent(self, hop: int) -> None:
        """Container `hop` of the route (the next one: hops are sent in order) is sent its request now."""
        self._sent.append(now())

    def answered(self, hop: int) -> None:
        """Container `hop` has answered, whole (an inner hop) or enough to be relayed (the last)."""
        if len(self._answered) == hop:
            self._answered.append(now())

    def failed(self, error: GatewayError) -> None:
        self.failure = error

    def end(self) -> float:
        """The request's answer is out (or abandoned); returns the end time."""
        self.ended = now()
        return self.ended

    @property
    def hops(self) -> int:
        """How many containers were sent a request."""
        return len(self._sent)

    @property
    def status(self) -> int:
        """The HTTP status the client was answered."""
        return 200 if self.failure is None else self.failure.status

    def spent(self, hop: int) -> float:
        """Seconds container `hop` took to answer (so far, or until the end, if it never did)."""
        answered = self._answered
        done = answered[hop] if hop < len(answered) else (self.ended or now())
        return done - self._sent[hop]

    def waited(self, hop: int) -> float:
        """Seconds in the gateway before container `hop` was sent its request (since the previous answer,
        or since the request was received)."""
        before = self._answered[hop - 1] if hop else self.received
        return self._sent[hop] - before

    def after(self, hop: int) -> float:
        """Seconds in the gateway from container `hop`'s answer to the end (0 if it never answered)."""
        answered = self._answered
        return self.ended - answered[hop] if hop < len(answered) else 0.0
