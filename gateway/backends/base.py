"""The seam between the data plane and the containers: the `Backend` and `Reply` protocols.

A backend is one container reached over one protocol. `invoke` sends an `Invocation` and returns the
container's 2xx `Reply` as soon as its head is in, with the body to be taken or streamed on; any other
outcome raises `ModelError` naming the container. The wording of those errors lives here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gateway import wire
from gateway.errors import ModelError
from gateway.invocation import Invocation
from gateway.upstream import BodyTooLarge

ERROR_BODY_LIMIT = wire.WHOLE  # how much of a container's error body is kept for OriginalMessage
HEALTH_TIMEOUT = 2.0  # seconds: SageMaker's ping timeout (spec §5), for every protocol's health check
MESSAGE_BODY_LIMIT = 1024  # how much of it is quoted in Message (ValidationError's Message is <= 2048)


class TensorError(Exception):
    """A body a converting backend cannot turn into its protocol's tensors (or an answer back into a body),
    worded as that server's own errors are (gateway.backends.tensors for TF Serving, kserve_json for the
    Open Inference Protocol); the backend answers it as the container would."""


class Reply(Protocol):
    """A container's successful answer; the body may still be arriving."""

    @property
    def content_type(self) -> bytes | None: ...

    @property
    def custom_attributes(self) -> bytes | None: ...

    @property
    def session_headers(self) -> bytes:
        """The container's X-Amzn-SageMaker-New-Session-Id / -Closed-Session-Id header lines, or b""."""

    @property
    def content_length(self) -> int | None:
        """The body's size when the container declared it, else None."""

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived."""

    def take(self) -> list[bytes]:
        """The body chunks that arrived since the last call."""

    async def wait(self) -> None:
        """Wait for more body or its end. Raises `ModelError` if the container fails meanwhile."""

    async def read(self, limit: int) -> bytes:
        """The whole body; `BodyTooLarge` past `limit` bytes, `ModelError` if the container fails."""

    def abandon(self) -> None:
        """Give up on the rest of the body (frees the connection)."""


class Exchange(Protocol):
    """An invocation started with `Backend.begin`, still in flight."""

    def abandon(self) -> None:
        """Nobody wants the answer any more (the client left): free what it holds."""


class Receiver(Protocol):
    """Who hears how an invocation started with `Backend.begin` ends (callbacks, not awaiting)."""

    def reply(self, reply: Reply) -> None:
        """A 2xx answer; whole if `reply.complete`, else its body is still arriving (consume it as usual)."""

    def error(self, error: ModelError) -> None:
        """The invocation failed."""


Begin = Callable[[Invocation, Receiver, int], Exchange | None]


@runtime_checkable
class CanBegin(Protocol):
    """A backend that can start an invocation without a coroutine: a capability, learned once per route
    (`gateway.routing.Route.begins`), not asked of every backend per request."""

    def begin(self, call: Invocation, receiver: Receiver, limit: int) -> Exchange | None:
        """Start `call` now, if this backend can right now; the outcome goes to `receiver` (a reply is
        handed over incomplete once more than `limit` bytes of body have arrived). None: it cannot at the
        moment (no idle pooled connection); use `invoke`."""


class Backend(Protocol):
    """One container, reached over one protocol."""

    name: str

    async def start(self) -> None:
        """Prepare connections; called once inside the running event loop."""

    async def invoke(self, call: Invocation) -> Reply:
        """Send `call`; return a 2xx reply or raise `ModelError`."""

    async def check_health(self) -> str | None:
        """None when the container is ready to serve, else why not."""

    async def close(self) -> None:
        """Drop connections."""


class BufferedReply:
    """A reply already whole in memory (for protocols that convert the answer)."""

    __slots__ = ("_body", "content_type", "custom_attributes")

    complete = True
    session_headers = b""

    def __init__(
        self, body: bytes, content_type: bytes | None, custom_attributes: bytes | None = None
    ) -> None:
        self._body = body
        self.content_type = content_type
        self.custom_attributes = custom_attributes

    @property
    def content_length(self) -> int:
        return len(self._body)

    def take(self) -> list[bytes]:
        body, self._body = self._body, b""
        return [body] if body else []

    async def wait(self) -> None:
        return None

    async def read(self, limit: int) -> bytes:
        if len(self._body) > limit:
            raise BodyTooLarge(len(self._body))
        return b"".join(self.take())

    def abandon(self) -> None:
        self._body = b""


def error_status(container: str, status: int, body: bytes) -> ModelError:
    """The container answered non-2xx: ModelError with its status and message (spec §1.3)."""
    text = body.decode("utf-8", "replace")
    quoted = text if len(text) <= MESSAGE_BODY_LIMIT else text[:MESSAGE_BODY_LIMIT] + "..."
    kind = "client" if 400 <= status < 500 else "server"
    return ModelError(
        f'Received {kind} error ({status}) from {container} with message "{quoted}".',
        container=container,
        original_status=status,
        original_message=text,
    )


def unreachable(container: str, address: str, reason: str, *, timed_out: bool = False) -> ModelError:
    """The container could not be talked to (refused, reset, timed out, broke HTTP).

    ModelError, as SageMaker counts socket errors and timeouts among a container's model errors
    (InvocationModelErrors, spec §2.3); see docs/decisions.md.
    """
    return ModelError(
        f"Container {container} at {address} {reason}.", container=container, timed_out=timed_out
    )
