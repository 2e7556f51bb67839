"""Who may reach mce at all: the `Host` and `Origin` of every request, checked before anything else.

A server on loopback is still reachable from a web page. With DNS rebinding, a page's own name resolves to
127.0.0.1 and its requests arrive with `Host: rebind.attacker.example:PORT`; a page on another local origin
(`http://localhost:3000`) sends its own `Origin`. Neither is a client of mce: SDKs and CLIs send no
`Origin`, and name mce by the address they were given. So every request, on every path (control plane,
runtime, `/metrics`, `/ping`), must

- carry a `Host` naming a loopback address or `localhost` (any port), the address mce listens on, or a
  name given with `--allow-host` (`*` accepts any Host: a private network that is itself the boundary;
  `*.example` any name under `example`);
- carry no `Origin`, or mce's own (`http://` and the Host it was reached by).

Anything else is answered 403 in the API's error shape with nothing done, and the connection closes.
What a control-plane request must also be (its Content-Type) is `gateway.server`'s, which knows the path.

The check costs a set lookup per request: a Host value once approved is remembered (up to `REMEMBERED`
values; past that, each is judged again, which is still cheap).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from gateway import wire
from gateway.errors import AccessDenied

REMEMBERED: Final = 1024  # distinct approved Host values kept for the fast path (loopback on every port...)
ANY_HOST = "*"


class ForeignRequest(AccessDenied):
    """A request that did not come from one of mce's clients: a foreign Host or Origin (403)."""


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address, no port) can only mean this machine: localhost, 127.0.0.0/8,
    ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name or address of a Host header value, lower-cased, without its port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1 : value.find("]")] if "]" in value else value
    name, colon, port = value.rpartition(":")
    return name if colon and port.isdigit() else value


class Origins:
    """The Host names mce answers to, fixed at start-up (`listen`: the address it was told to listen on;
    `allowed`: the `--allow-host` names)."""

    def __init__(self, listen: str, allowed: Iterable[str] = ()) -> None:
        names = {name.strip().lower().rstrip(".") for name in allowed}
        self.any_host = ANY_HOST in names
        self._suffixes = tuple(name[1:] for name in names if name.startswith("*.") and len(name) > 2)
        self._names = frozenset(name for name in names if not name.startswith("*"))
        listen = host_name(listen)
        if listen not in ("0.0.0.0", "::", ""):  # a wildcard is no name a client uses
            self._names |= {listen}
        self._approved: set[bytes] = set()

    def refusal(self, host: bytes | None, origin: bytes | None) -> ForeignRequest | None:
        """Why this request is refused (None: it may go on). `host` None: an HTTP/1.0 request without one
        (no browser sends that)."""
        if origin is None and (host is None or host in self._approved):
            return None  # the common case: a client that names mce as it always does
        if host is not None and host not in self._approved:
            if not self._answers(host_name(host.decode("latin-1"))):
                return ForeignRequest(
                    f"Host {wire.shown(host)} is not a name this server answers to: it answers loopback "
                    "addresses, localhost, the address it listens on and the names given with --allow-host "
                    "(a web page whose own name resolves to this machine must not reach it)."
                )
            if len(self._approved) < REMEMBERED:
                self._approved.add(host)
        if origin is not None and (host is None or origin.lower() != b"http://" + host.lower()):
            return ForeignRequest(
                f"Origin {wire.shown(origin)} is not this server's own: a web page of another origin may "
                "not call it (SDKs and the AWS CLI send no Origin)."
            )
        return None

    def _answers(self, name: str) -> bool:
        if self.any_host or is_loopback(name) or name in self._names:
            return True
        return any(name.endswith(suffix) for suffix in self._suffixes)
