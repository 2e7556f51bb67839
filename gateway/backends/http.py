"""What every HTTP backend shares: a keep-alive pool, request heads prefixed at start-up, error mapping.

A protocol module subclasses `HttpBackend` with its paths and its idea of health; this module turns
transport failures (`gateway.upstream.UpstreamError`) into `ModelError` naming the container.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway import upstream
from gateway.backends.base import ERROR_BODY_LIMIT, ReplyTooLarge, error_status, unreachable
from gateway.endpoint import BackendSpec
from gateway.errors import ModelError
from gateway.invocation import Invocation

HEALTH_TIMEOUT = 2.0  # SageMaker's ping timeout (spec §5)
_SMALL_BODY = 64 * 1024  # below this, head and body are joined and written in one call


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
    def content_length(self) -> int | None:
        return self._response.content_length

    @property
    def complete(self) -> bool:
        return self._response.complete

    def take(self) -> list[bytes]:
        return self._response.take()

    async def wait(self) -> None:
        try:
            await self._response.wait()
        except upstream.UpstreamError as exc:
            raise self._backend.failure(exc) from exc

    async def read(self, limit: int) -> bytes:
        try:
            return await self._response.read(limit)
        except upstream.ResponseTooLarge as exc:
            raise ReplyTooLarge(exc.received) from exc
        except upstream.UpstreamError as exc:
            raise self._backend.failure(exc) from exc

    def abandon(self) -> None:
        self._response.abandon()


class HttpBackend:
    """A container reached over HTTP/1.1 at `Backend.Url`."""

    invocations_path = b"/invocations"
    ping_path = b"/ping"

    def __init__(self, name: str, spec: BackendSpec) -> None:
        if spec.Url is None:
            raise ValueError(f"container {name} has no Backend.Url")
        parts = urlsplit(spec.Url)
        self.name = name
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port if parts.port is not None else 80
        self.address = f"{self._host}:{self._port}"
        self._timeout = spec.InvocationTimeoutInSeconds
        self._connect_timeout = spec.ConnectTimeoutInSeconds
        host_header = b"Host: " + self.address.encode() + b"\r\n"
        self._invoke_head = b"POST " + self.invocations_path + b" HTTP/1.1\r\n" + host_header
        self._ping_request = b"GET " + self.ping_path + b" HTTP/1.1\r\n" + host_header + b"\r\n"
        self._pool: upstream.Pool | None = None

    async def start(self) -> None:
        self._pool = upstream.Pool(self._host, self._port, connect_timeout=self._connect_timeout)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    async def invoke(self, call: Invocation) -> HttpReply:
        response = await self.send(self.request_bytes(call), self._timeout)
        if 200 <= response.status < 300:
            return HttpReply(response, self)
        raise error_status(self.name, response.status, await self._error_body(response))

    async def check_health(self) -> str | None:
        assert self._pool is not None, "start() first"
        try:
            response = await self._pool.request(self._ping_request, timeout=HEALTH_TIMEOUT)
            body = await response.read(ERROR_BODY_LIMIT)
        except upstream.UpstreamTimeout:
            return f"{self.address} did not answer /ping within {HEALTH_TIMEOUT:g} s"
        except upstream.UpstreamError as exc:
            return f"{self.address} {exc}"
        except upstream.ResponseTooLarge:
            return f"{self.address} answered /ping with an oversized body"
        if response.status != 200:
            return f"{self.address} answered /ping with {response.status}: {body[:200].decode('utf-8', 'replace')}"
        return None

    def request_bytes(self, call: Invocation) -> bytes | list[bytes]:
        """The request for `call`, framed: one bytes object for small bodies, head and body otherwise."""
        parts = [self._invoke_head]
        if call.content_type is not None:
            parts += (b"Content-Type: ", call.content_type, b"\r\n")
        if call.accept is not None:
            parts += (b"Accept: ", call.accept, b"\r\n")
        if call.custom_attributes is not None:
            parts += (b"X-Amzn-SageMaker-Custom-Attributes: ", call.custom_attributes, b"\r\n")
        if call.inference_id is not None:
            parts += (b"X-Amzn-SageMaker-Inference-Id: ", call.inference_id, b"\r\n")
        if call.target_model is not None:
            parts += (b"X-Amzn-SageMaker-Target-Model: ", call.target_model, b"\r\n")
        parts += (b"Content-Length: ", str(len(call.body)).encode(), b"\r\n\r\n")
        if len(call.body) < _SMALL_BODY:
            parts.append(call.body)
            return b"".join(parts)
        return [b"".join(parts), call.body]

    async def send(self, data: bytes | list[bytes], timeout: float) -> upstream.Response:
        assert self._pool is not None, "start() first"
        try:
            return await self._pool.request(data, timeout=timeout)
        except upstream.UpstreamError as exc:
            raise self.failure(exc, timeout) from exc

    def failure(self, exc: upstream.UpstreamError, timeout: float | None = None) -> ModelError:
        if isinstance(exc, upstream.UpstreamTimeout):
            limit = timeout if timeout is not None else self._timeout
            return unreachable(self.name, self.address, f"did not answer within {limit:g} s")
        return unreachable(self.name, self.address, str(exc))

    async def _error_body(self, response: upstream.Response) -> bytes:
        try:
            return await response.read(ERROR_BODY_LIMIT)
        except upstream.ResponseTooLarge:
            return b"(the container's error body was larger than 64 KiB)"
        except upstream.UpstreamError:
            return b"(the container closed the connection before its error body was complete)"
