"""What the front door tells about each invocation: metrics, the `Server-Timing` header, the access log.

An invocation carries `marks`, perf_counter readings: when it was received whole, then when each container
was sent its request and when it answered. From those: ContainerLatency per hop, OverheadLatency as the
rest (gateway.metrics), a `Server-Timing` header (each container's time and the gateway's so far), and,
when `--access-log` is on, one JSON line. With metrics off (`--no-metrics`) nothing is read or kept.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from gateway.errors import GatewayError, ModelError
from gateway.metrics import Metrics

now = time.perf_counter
access_log = logging.getLogger("gateway.requests")


class Telemetry:
    def __init__(self, metrics: Metrics | None, *, log_requests: bool = False) -> None:
        self.metrics = metrics
        self.enabled = metrics is not None or log_requests
        self.log_requests = log_requests

    def server_timing(self, prefixes: Sequence[bytes], marks: list[float]) -> bytes:
        """`Server-Timing`: one entry per container answered so far, then the gateway's own time so far.

        `prefixes` are each container's entry up to its duration (`Router.timing`), made at start-up."""
        if len(marks) == 3:  # one container, answered: the common case, in one formatting step
            spent = marks[2] - marks[1]
            return b"%s%.3f, gateway;dur=%.3f" % (prefixes[0], spent * 1000, max(now() - marks[0] - spent, 0.0) * 1000)
        parts = []
        in_containers = 0.0
        for hop in range((len(marks) - 1) // 2):
            spent = marks[2 + 2 * hop] - marks[1 + 2 * hop]
            in_containers += spent
            parts.append(b"%s%.3f" % (prefixes[hop], spent * 1000))
        parts.append(b"gateway;dur=%.3f" % (max(now() - marks[0] - in_containers, 0.0) * 1000))
        return b", ".join(parts)

    def finish(
        self, rid: bytes, names: Sequence[str], marks: list[float], failure: GatewayError | None,
        inference_id: bytes | None,
    ) -> None:
        """Record one answered invocation (its last mark may be a container still owed an answer)."""
        end = now()
        if len(marks) % 2 == 0:  # a container was sent a request and never finished answering
            marks.append(end)
        status = None
        if isinstance(failure, ModelError):
            status = failure.original_status or 0
        if self.metrics is not None and len(marks) > 1:
            self.metrics.record(names, marks, end, status)
        if self.log_requests:
            hops = (len(marks) - 1) // 2
            access_log.info(
                json.dumps(
                    {
                        "request_id": rid.decode(),
                        "inference_id": inference_id.decode("latin-1") if inference_id else None,
                        "containers": list(names[:hops]),
                        "status": failure.status if failure else 200,
                        "error": failure.code if failure else None,
                        "container_ms": [round((marks[2 + 2 * h] - marks[1 + 2 * h]) * 1000, 3) for h in range(hops)],
                        "total_ms": round((end - marks[0]) * 1000, 3),
                    }
                )
            )
