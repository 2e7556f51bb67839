"""The front door's limits and timeouts: what one client, and all clients together, may hold of the gateway.

Defaults are nginx's where it has one (`client_header_timeout` and `client_body_timeout` 60 s,
`keepalive_timeout` 75 s, `send_timeout` 60 s, `large_client_header_buffers 4 8k`: 8 KiB of request line,
32 KiB of head) and Envoy's for the header count (`max_headers_count` 100). Every one is documented in the
README ("Limits and timeouts") and docs/decisions.md (D23); the timeouts and the caps on connections and
buffered bodies can be set on `mce serve|up`.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace

logger = logging.getLogger(__name__)

SECONDS = 1.0
KIB = 1024
MIB = 1024 * KIB

# What a connection needs besides its own socket: one upstream connection while it is answered.
FDS_PER_CONNECTION = 2
# Descriptors kept back for everything else: listening sockets, logs, idle pooled upstream connections.
FDS_RESERVED = 256


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = (
        60 * SECONDS
    )  # from a request's first byte (a new connection's accept) to its last header
    body_timeout: float = 60 * SECONDS  # from the last header to the last byte of the body
    keep_alive_timeout: float = (
        75 * SECONDS
    )  # an idle keep-alive connection, between an answer and the next request
    send_timeout: float = (
        60 * SECONDS
    )  # a client that takes none of its answer while the gateway waits to write
    max_connections: int = 4096  # open client connections; past it a new one is answered 503 and closed
    max_url: int = 8 * KIB  # the request target; past it 414
    max_head: int = 32 * KIB  # request line and headers together; past it 431
    max_headers: int = 100  # header fields; past it 431
    max_buffered_bodies: int = 256 * MIB  # request bodies held by all connections together; past it 503
    read_ahead: int = 1  # complete requests a connection may queue behind the one being answered
    sweep: float = 1 * SECONDS  # how often the timeouts are checked: each fires at most this late

    def fitted(self) -> Limits:
        """These limits with `max_connections` lowered to what the process's descriptor limit can hold."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self
        room = max((soft - FDS_RESERVED) // FDS_PER_CONNECTION, 1)
        if room >= self.max_connections:
            return self
        logger.warning(
            "the descriptor limit (ulimit -n %d) holds %d client connections, not %d: capping there",
            soft,
            room,
            self.max_connections,
        )
        return replace(self, max_connections=room)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard one (as nginx's worker_rlimit_nofile would); return
    it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


class BodyBudget:
    """Request bodies held across every connection of the process, against one cap (`max_buffered_bodies`)."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size
