"""What the front door tells about each invocation: metrics, the `Server-Timing` header, the access log.

Each invocation's cycle keeps a `Timeline` (gateway.timeline): when it was received, when each container
was sent its request and answered, and how it failed. From it: ContainerLatency per hop, OverheadLatency
as the rest, and the 4XX/5XX counts by the answer's real status (gateway.metrics); a `Server-Timing`
header (each container's time and the gateway's so far); and, when `--access-log` is on, one JSON line.
With metrics and the access log off (`--no-metrics`) no timeline is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from gateway.metrics import Metrics
from gateway.timeline import Timeline, now

if TYPE_CHECKING:
    from gateway.routing import Route

access_log = logging.getLogger("gateway.requests")

_THOUSANDTHS: Final = tuple(b".%03d" % n for n in range(1000))


def milliseconds(seconds: float) -> bytes:
    """`seconds` (>= 0) in milliseconds with three decimals, as `b"%.3f" % (seconds * 1000)` has them, to the
    nearest microsecond; an integer's digits and a table's decimals, at half the cost of formatting a
    float (D56)."""
    micros = int(seconds * 1_000_000 + 0.5)
    return str(micros // 1000).encode() + _THOUSANDTHS[micros % 1000]


class Telemetry:
    def __init__(
        self, metrics: Metrics | None, containers: Sequence[str] = (), *, log_requests: bool = False
    ) -> None:
        self.metrics = metrics
        self.enabled = metrics is not None or log_requests
        self.log_requests = log_requests
        # each container's Server-Timing entry up to its duration, made once
        self._timing = {name: b'container;desc="%s";dur=' % name.encode() for name in containers}

    def server_timing(self, route: Route, timeline: Timeline) -> bytes:
        """`Server-Timing`: one entry per container answered so far, then the gateway's own time so far."""
        names, timing = route.names, self._timing
        if timeline.hops == 1:  # one container, answered: the common case
            spent = timeline.spent(0)
            gateway = max(now() - timeline.received - spent, 0.0)
            return timing[names[0]] + milliseconds(spent) + b", gateway;dur=" + milliseconds(gateway)
        parts = []
        in_containers = 0.0
        for hop in range(timeline.hops):
            spent = timeline.spent(hop)
            in_containers += spent
            parts.append(timing[names[hop]] + milliseconds(spent))
        parts.append(b"gateway;dur=" + milliseconds(max(now() - timeline.received - in_containers, 0.0)))
        return b", ".join(parts)

    def finish(
        self, rid: bytes, names: Sequence[str], timeline: Timeline, inference_id: bytes | None
    ) -> None:
        """Record one answered invocation: request `rid`, through the containers `names`."""
        end = timeline.end()
        if self.metrics is not None:
            self.metrics.record(names, timeline)
        if self.log_requests:
            failure = timeline.failure
            access_log.info(
                json.dumps(
                    {
                        "request_id": rid.decode(),
                        "inference_id": inference_id.decode("latin-1") if inference_id else None,
                        "containers": list(names[: timeline.hops]),
                        "status": timeline.status,
                        "error": failure.code if failure else None,
                        "container_ms": [
                            round(timeline.spent(hop) * 1000, 3) for hop in range(timeline.hops)
                        ],
                        "total_ms": round((end - timeline.received) * 1000, 3),
                    }
                )
            )
