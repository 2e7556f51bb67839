"""The local SageMaker's console: a page a browser opens at `mce up`'s address (GET /).

The page (index.html, console.js, console.css, all served from here: it works offline) reads what any
client reads: the control plane (ListEndpoints, DescribeEndpoint, ListInferenceComponents at POST /) and
GET /metrics, every few seconds, and keeps the rates and latencies it computes for the last minutes. The
one thing no API says, each running container's state and last lines of output, it reads from GET
/console/containers?endpoint=NAME. It is served to mce's own origin only (gateway.origins checks Host and
Origin before anything else), never framed, and is off under --access: its calls would need signatures
a browser cannot make.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

from gateway import wire
from gateway.errors import UnknownOperation, ValidationError

PREFIX = b"/console/"
HERE = Path(__file__).parent
ASSETS = {  # path -> (file, Content-Type)
    b"/": ("index.html", b"text/html; charset=utf-8"),
    b"/console/console.js": ("console.js", b"text/javascript; charset=utf-8"),
    b"/console/console.css": ("console.css", b"text/css; charset=utf-8"),
    b"/console/icon.svg": ("icon.svg", b"image/svg+xml"),
}
HEADERS = (
    b"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    b"form-action 'none'\r\n"
    b"X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
    b"Cache-Control: no-store\r\n"
)
OFF_UNDER_ACCESS = UnknownOperation(
    "The console is off under --access: the control-plane calls it makes would need SigV4 signatures, "
    "which a browser page cannot make. Use mce status, or the API."
)
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # the API's pattern for EndpointName


class Containers(Protocol):
    def containers(self, name: str) -> list[dict[str, object]] | None: ...


def answer(url: bytes, control: Containers) -> tuple[int, bytes, bytes]:
    """(status, Content-Type, body) for GET `url`; a GatewayError for anything else."""
    path, _, query = url.partition(b"?")
    asset = ASSETS.get(path)
    if asset is not None:
        name, content_type = asset
        return 200, content_type, _read(name)
    if path == b"/console/containers":
        names = parse_qs(query.decode("latin-1")).get("endpoint", [])
        if len(names) != 1 or not _ENDPOINT_NAME.fullmatch(names[0]):
            raise ValidationError("GET /console/containers takes ?endpoint=<EndpointName>.")
        found = control.containers(names[0])
        if found is None:
            raise ValidationError(f"Could not find endpoint {names[0]}.")
        return 200, wire.JSON_TYPE, json.dumps({"containers": found}).encode()
    raise UnknownOperation(f"The console has no {wire.shown(path)}.")


@functools.cache
def _read(name: str) -> bytes:
    """A page's file, read from the package once."""
    return (HERE / name).read_bytes()
