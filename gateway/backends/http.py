"""What every HTTP backend shares: a keep-alive pool, request heads prefixed at start-up, error mapping.

A protocol module subclasses `HttpBackend` with its paths and its idea of health; this module turns
transport failures (`gateway.upstream.UpstreamError`) into `ModelError` naming the container.
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import urlsplit

from gateway import upstream, wire
from gateway.backends.base import ERROR_BODY_LIMIT, HEALTH_TIMEOUT, Receiver, error_status, unreachable
from gateway.endpoint import BackendSpec
from gateway.errors import ModelError
from gateway.invocation import Invocation


class HttpReply:
    """A 2xx upstream response, as a `Reply`: transport failures come out as `ModelError`."""

    __slots__ = ("_backend", "_response")

    def __init__(self, response: upstream.Response, backend: HttpBackend) -> None:
        self._response = response
        self._backend = backend

    @property
    def content_type(self) -> bytes | None:
        return self._response.headers.get(b"content-type")

    @property
    def custom_attributes(self) -> bytes | None:
        return self._response.headers.get(b"x-amzn-sagemaker-custom-attributes")

    @property
    def session_headers(self) -> bytes:
        """A session the container opened (X-Amzn-SageMaker-New-Session-Id, or X-Amzn-SageMaker-Session-Id
        as the LMI containers answer a NEW_SESSION) or closed, as the client's NewSessionId and
        ClosedSessionId (spec §1.6)."""
        headers = self._response.headers
        opened = headers.get(wire.NEW_SESSION_ID) or headers.get(wire.SESSION_ID)
        closed = headers.get(wire.CLOSED_SESSION_ID)
        if opened is None and closed is None:
            return b""
        lines = b""
        if opened is not None:
            lines += b"X-Amzn-SageMaker-New-Session-Id: " + opened + b"\r\n"
        if closed is not None:
            lines += b"X-Amzn-SageMaker-Closed-Session-Id: " + closed + b"\r\n"
        return lines

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    @property
    def complete(self) -> bool:
        return self._response.complete

    def take(self) -> list[bytes]:
        return self._response.take()

    async def wait(self) -> None:
        with self._backend.translated:
            await self._response.wait()

    async def read(self, limit: int) -> bytes:
        with self._backend.translated:
            return await self._response.read(limit)

    def abandon(self) -> None:
        self._response.abandon()


class HttpExchange:
    """An invocation on a pooled connection, reported through callbacks (`HttpBackend.begin`)."""

    __slots__ = ("_backend", "_connection", "_receiver")

    def __init__(self, backend: HttpBackend, receiver: Receiver, connection: upstream.Connection) -> None:
        self._backend = backend
        self._receiver = receiver
        self._connection = connection

    def complete(self, response: upstream.Response) -> None:
        self._answered(response)

    def overflow(self, response: upstream.Response) -> None:
        self._answered(response)

    def failed(self, error: upstream.UpstreamError) -> None:
        self._receiver.error(self._backend.failure(error))

    def abandon(self) -> None:
        self._connection.abandon()

    def _answered(self, response: upstream.Response) -> None:
        if 200 <= response.status < 300:
            self._receiver.reply(self._backend.reply(response))
            return
        body = b"".join(response.take())[:ERROR_BODY_LIMIT]
        response.abandon()
        self._receiver.error(error_status(self._backend.name, response.status, body))


class Translated:
    """`with backend.translated:` turns a transport failure (`UpstreamError`) inside into the backend's
    `ModelError`, raised from it: the one place that translation happens for HTTP backends."""

    __slots__ = ("_backend", "_timeout")

    def __init__(self, backend: HttpBackend, timeout: float | None = None) -> None:
        self._backend = backend
        self._timeout = timeout  # the deadline the message names, when not the invocation timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, upstream.UpstreamError):
            raise self._backend.failure(exc, self._timeout) from exc


class HttpAddress:
    """One HTTP server a backend talks to: its address, its `Host` header, and a keep-alive pool."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port if parts.port is not None else 80
        self.address = f"{self.host}:{self.port}"
        self.host_header = b"Host: " + self.address.encode() + b"\r\n"
        self._connect_timeout = connect_timeout
        self._pool: upstream.Pool | None = None

    @property
    def pool(self) -> upstream.Pool:
        assert self._pool is not None, "start() first"
        return self._pool

    def start(self) -> None:
        self._pool = upstream.Pool(self.host, self.port, connect_timeout=self._connect_timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def get_request(self, path: bytes) -> bytes:
        return b"GET " + path + b" HTTP/1.1\r\n" + self.host_header + b"Accept: application/json\r\n\r\n"

    async def fetch(self, path: bytes, limit: int) -> tuple[int, bytes] | str:
        """GET `path` as Prometheus asks for its text format: (status, body of at most `limit` bytes), or
        why there is no answer within HEALTH_TIMEOUT."""
        request = b"GET " + path + b" HTTP/1.1\r\n" + self.host_header + b"Accept: text/plain\r\n\r\n"
        return await self.probe(request, path.decode(), limit, whole=True)

    async def probe(
        self, request: bytes, what: str, limit: int = ERROR_BODY_LIMIT, *, whole: bool = False
    ) -> tuple[int, bytes] | str:
        """A health request: (status, body), or why it got no answer within HEALTH_TIMEOUT. A body past
        `limit` bytes is not read: the status is the answer, or, when the body is (`whole`), there is none."""
        try:
            response = await self.pool.request(request, timeout=HEALTH_TIMEOUT)
            try:
                return response.status, await response.read(limit)
            except upstream.BodyTooLarge:
                if whole:
                    return f"{self.address} answered {what} with more than {limit} bytes"
                return response.status, b""
        except upstream.UpstreamTimeout:
            return f"{self.address} did not answer {what} within {HEALTH_TIMEOUT:g} s"
        except upstream.UpstreamError as exc:
            return f"{self.address} {exc}"


class HttpBackend:
    """A container reached over HTTP/1.1 at `Backend.Url`: `POST /invocations`, healthy when `GET /ping` is
    200."""

    def __init__(self, name: str, spec: BackendSpec, *, invocations_path: bytes = b"/invocations") -> None:
        if spec.Url is None:
            raise ValueError(f"container {name} has no Backend.Url")
        self.name = name
        self.server = HttpAddress(spec.Url, spec.ConnectTimeoutInSeconds)
        self.address = self.server.address
        self._timeout = spec.InvocationTimeoutInSeconds
        self._invoke_head = b"POST " + invocations_path + b" HTTP/1.1\r\n" + self.server.host_header
        self._ping_request = self.server.get_request(b"/ping")
        self.translated = Translated(self)

    async def start(self) -> None:
        self.server.start()

    async def close(self) -> None:
        self.server.close()

    async def invoke(self, call: Invocation) -> HttpReply:
        timeout = call.timeout or self._timeout
        with self.translated if not call.timeout else Translated(self, timeout):
            response = await self.server.pool.request(
                self.request_bytes(call), timeout=timeout, stall=timeout if call.stream else 0.0
            )
        if 200 <= response.status < 300:
            return self.reply(response)
        raise error_status(self.name, response.status, await self.error_body(response))

    async def check_health(self) -> str | None:
        answer = await self.server.probe(self._ping_request, "/ping")
        if isinstance(answer, str):
            return answer
        status, body = answer
        if status != 200:
            return f"{self.address} answered /ping with {status}: {body[:200].decode('utf-8', 'replace')}"
        return None

    def reply(self, response: upstream.Response) -> HttpReply:
        """A 2xx response as the client's reply (a protocol that rewrites its headers overrides this)."""
        return HttpReply(response, self)

    def request_bytes(self, call: Invocation, head: bytes | None = None) -> bytes | list[bytes]:
        """The request for `call`, framed: one bytes object for small bodies, head and body otherwise.
        `head` is the request line and Host header, when not the backend's invocation path."""
        # each header's CRLF goes with the next one's name; appended one by one (compiled, an append is a
        # direct call where extending by a tuple makes the tuple first)
        parts = [
            head if head is not None else self._invoke_head,
            b"Content-Length: ",
            str(len(call.body)).encode(),
        ]
        if call.content_type is not None:
            parts.append(b"\r\nContent-Type: ")
            parts.append(call.content_type)
        if call.accept is not None:
            parts.append(b"\r\nAccept: ")
            parts.append(call.accept)
        if call.custom_attributes is not None:
            parts.append(b"\r\nX-Amzn-SageMaker-Custom-Attributes: ")
            parts.append(call.custom_attributes)
        if call.inference_id is not None:
            parts.append(b"\r\nX-Amzn-SageMaker-Inference-Id: ")
            parts.append(call.inference_id)
        if call.target_model is not None:
            parts.append(b"\r\nX-Amzn-SageMaker-Target-Model: ")
            parts.append(call.target_model)
        if call.session_id is not None:
            parts.append(b"\r\nX-Amzn-SageMaker-Session-Id: ")
            parts.append(call.session_id)
        if call.traceparent is not None:
            parts.append(b"\r\ntraceparent: ")
            parts.append(call.traceparent)
        parts.append(b"\r\n\r\n")
        if len(call.body) < wire.WHOLE:  # joined with its head: one write
            parts.append(call.body)
            return b"".join(parts)
        return [b"".join(parts), call.body]

    def failure(self, exc: upstream.UpstreamError, timeout: float | None = None) -> ModelError:
        if isinstance(exc, upstream.UpstreamTimeout):
            limit = timeout if timeout is not None else self._timeout
            return unreachable(self.name, self.address, f"did not answer within {limit:g} s", timed_out=True)
        return unreachable(self.name, self.address, str(exc))

    async def error_body(self, response: upstream.Response) -> bytes:
        try:
            return await response.read(ERROR_BODY_LIMIT)
        except upstream.BodyTooLarge:
            return b"(the container's error body was larger than 64 KiB)"
        except upstream.UpstreamError:
            return b"(the container closed the connection before its error body was complete)"


class SingleExchangeBackend(HttpBackend):
    """An HttpBackend whose invocation is one exchange, the call sent as it is: so it can `begin` one on
    an idle pooled connection, with no task (gateway.backends.base.CanBegin)."""

    def begin(self, call: Invocation, receiver: Receiver, limit: int) -> HttpExchange | None:
        pool = self.server.pool
        connection = pool.idle()
        if connection is None:
            return None
        exchange = HttpExchange(self, receiver, connection)
        timeout = call.timeout or self._timeout
        stall = timeout if call.stream else 0.0
        connection.begin(self.request_bytes(call), pool.loop.time() + timeout, exchange, limit, stall)
        return exchange
