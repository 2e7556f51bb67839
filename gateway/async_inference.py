"""InvokeEndpointAsync: requests queued per endpoint, run in the background, answers written to S3.

`POST /endpoints/{name}/async-invocations` answers 202 at once with the InferenceId and where the answer
(`OutputLocation`) or the failure (`FailureLocation`) will be, as SageMaker does (spec §1.4, §1.6). The
endpoint must have an `AsyncInferenceConfig` (CreateEndpointConfig's, or the endpoint document's):

    OutputConfig.S3OutputPath     where answers go: <path>/<S3OutputPathExtension>/<Filename or id.out>
    OutputConfig.S3FailurePath    where failures go (default: the output path): <path>/<id>-error.out
    ClientConfig.MaxConcurrentInvocationsPerInstance   requests run at once (default 4: SageMaker
                                                       "chooses an optimal value", locally one instance)

The input is `InputLocation` (`s3://`, read with botocore's usual credentials and `AWS_ENDPOINT_URL_S3`,
or `https://`) or the inline `Body`. Each request runs through the endpoint's containers as an
InvokeEndpoint does, by the same request cycle (gateway.cycle), answered into a spooled file instead of a
socket; it waits at most `RequestTTLSeconds` in the queue (expired: its failure says so) and runs at most
`InvocationTimeoutSeconds`. The queue holds up to QUEUE_LIMIT requests; a full queue answers 503, which
clients retry.

With a `Journal` (`mce up`: `<state>/async.db`), every accepted request is written down before its 202
is sent and forgotten only once its output or failure object is written: each ends in exactly one object.
A request queued or running when mce stops (SIGTERM or kill -9) is run again when its endpoint is served
again (a request running at that moment may so run twice; its object is written once more, in the same
place). An update keeps the queue, or hands it whole to the new one when the asynchronous configuration
changes (each request keeps the locations its 202 named); a deleted endpoint's requests get failure objects
saying so. An update waits for asynchronous requests running on the old variants as for synchronous ones.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import sqlite3
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway import wire
from gateway.aws import s3_client
from gateway.errors import GatewayError, ServiceUnavailable, ValidationError
from gateway.invocation import Invocation, check_ascii, check_printable

if TYPE_CHECKING:
    from gateway.backends import Reply
    from gateway.cycle import Cycle, Responder
    from gateway.endpoint import Endpoint
    from gateway.service import Service, Variants

logger = logging.getLogger(__name__)

MAX_INLINE_BODY = 128_000  # the API's inline Body (spec §1.6)
MAX_INPUT = 1024**3  # SageMaker's asynchronous payload limit, 1 GB; the input is held in memory
DEFAULT_TTL, MIN_TTL, MAX_TTL = 21600, 60, 21600  # RequestTTLSeconds (spec §1.4)
DEFAULT_TIMEOUT, MIN_TIMEOUT, MAX_TIMEOUT = 900, 1, 3600  # InvocationTimeoutSeconds
DEFAULT_CONCURRENCY = 4
QUEUE_LIMIT = 1000  # requests waiting per endpoint
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # an answer larger than this is spooled to a temporary file

_EXTENSION = re.compile(r"(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+")
_FILENAME = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*")
_INPUT = re.compile(r"(https|s3)://([^/]+)/?(.*)")


@dataclass(frozen=True)
class AsyncConfig:
    output: str  # s3://bucket/prefix
    failure: str
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_api(cls, config: dict[str, Any]) -> AsyncConfig:
        """From CreateEndpointConfig's AsyncInferenceConfig (botocore has checked its shape)."""
        output = config.get("OutputConfig", {})
        path = output.get("S3OutputPath")
        if not isinstance(path, str) or not path.startswith("s3://"):
            raise ValidationError("AsyncInferenceConfig.OutputConfig.S3OutputPath must be an s3:// URI.")
        failure = output.get("S3FailurePath") or path
        if not failure.startswith("s3://"):
            raise ValidationError("AsyncInferenceConfig.OutputConfig.S3FailurePath must be an s3:// URI.")
        concurrency = config.get("ClientConfig", {}).get(
            "MaxConcurrentInvocationsPerInstance", DEFAULT_CONCURRENCY
        )
        return cls(path.rstrip("/"), failure.rstrip("/"), int(concurrency))

    @classmethod
    def of(cls, endpoint: Endpoint) -> AsyncConfig | None:
        """An endpoint document's AsyncInferenceConfig, if it has one."""
        config = endpoint.AsyncInferenceConfig
        return cls.from_api(config.model_dump(exclude_none=True)) if config is not None else None


@dataclass
class Job:
    inference_id: str
    output: str  # s3:// URI of the answer
    failure: str  # s3:// URI of the failure
    call: Invocation
    input_location: str | None
    expires: float  # monotonic
    timeout: float
    enqueued: float = field(default_factory=time.monotonic)
    key: str = field(default_factory=lambda: str(uuid.uuid4()))  # the journal's, unique

    def to_json(self) -> dict[str, Any]:
        call = self.call
        return {
            "inference_id": self.inference_id,
            "output": self.output,
            "failure": self.failure,
            "input_location": self.input_location,
            "expires": time.time() + (self.expires - time.monotonic()),  # wall clock: it outlives mce
            "timeout": self.timeout,
            "headers": [_text(h) for h in (call.content_type, call.accept, call.custom_attributes)],
        }

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any], body: bytes) -> Job:
        content_type, accept, attributes = (_bytes(h) for h in data["headers"])
        inference_id = data["inference_id"]
        call = Invocation(
            body, content_type, accept, attributes, inference_id.encode(), timeout=float(data["timeout"])
        )
        expires = time.monotonic() + (float(data["expires"]) - time.time())
        return cls(
            inference_id,
            data["output"],
            data["failure"],
            call,
            data["input_location"],
            expires,
            float(data["timeout"]),
            key=key,
        )


class Journal:
    """Accepted asynchronous requests, on disk until their object is written (one SQLite file, used from
    the event loop; a request's body is at most MAX_INLINE_BODY bytes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, "
            "accepted REAL NOT NULL, job TEXT NOT NULL, body BLOB NOT NULL)"
        )

    def add(self, endpoint: str, job: Job) -> None:
        """Before the 202: ServiceUnavailable (retryable) if it cannot be written."""
        try:
            self._db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?)",
                (job.key, endpoint, time.time(), json.dumps(job.to_json()), job.call.body),
            )
        except sqlite3.Error as exc:
            raise ServiceUnavailable(
                f"The asynchronous request cannot be written down ({self.path}: {exc}); retry."
            ) from None

    def done(self, job: Job) -> None:
        try:
            self._db.execute("DELETE FROM jobs WHERE key = ?", (job.key,))
        except sqlite3.Error as exc:  # it is then run again after a restart: its object written again
            logger.error("asynchronous request %s: cannot forget it (%s: %s)", job.key, self.path, exc)

    def pending(self, endpoint: str) -> list[Job]:
        rows = self._db.execute(
            "SELECT key, job, body FROM jobs WHERE endpoint = ? ORDER BY accepted", (endpoint,)
        )
        return [Job.from_json(key, json.loads(job), body) for key, job, body in rows]

    def close(self) -> None:
        self._db.close()


def job_from(headers: dict[bytes, bytes], body: bytes, config: AsyncConfig) -> Job:
    """An InvokeEndpointAsync request, checked against the API's rules (botocore checks few of them)."""
    get = headers.get
    location = _text(get(b"x-amzn-sagemaker-inputlocation"))
    if location is not None and body:
        raise ValidationError("Give InputLocation or Body, not both.")
    if location is None and not body:
        raise ValidationError("Give InputLocation (an s3:// or https:// URI) or an inline Body.")
    if location is not None and (len(location) > 1024 or not _INPUT.fullmatch(location)):
        raise ValidationError(f"InputLocation '{location[:100]}' must match ^(https|s3)://([^/]+)/?(.*)$.")
    if len(body) > MAX_INLINE_BODY:
        raise ValidationError(f"An inline Body is at most {MAX_INLINE_BODY} bytes; use InputLocation.")
    given = get(wire.INFERENCE_ID)
    if given is not None:
        check_printable(given, "InferenceId", wire.MAX_INFERENCE_ID)
    # the objects are named by a fresh id, also when the client names the request: two accepted requests
    # never share an output or a failure object, whatever InferenceId they carry
    unique = str(uuid.uuid4())
    inference_id = _text(given) or unique
    extension = _text(get(b"x-amzn-sagemaker-s3outputpathextension"))
    if extension is not None and (len(extension) > 512 or not _EXTENSION.fullmatch(extension)):
        raise ValidationError(f"S3OutputPathExtension '{extension[:100]}' is not a relative S3 path.")
    filename = _text(get(b"x-amzn-sagemaker-filename"))
    if filename is not None and (len(filename) > 32 or not _FILENAME.fullmatch(filename)):
        raise ValidationError(
            f"Filename '{filename[:40]}' must match ^(?!.*\\..*\\.)[a-zA-Z0-9][a-zA-Z0-9-_\\.]*$."
        )
    ttl = _seconds(
        get(b"x-amzn-sagemaker-requestttlseconds"), "RequestTTLSeconds", DEFAULT_TTL, MIN_TTL, MAX_TTL
    )
    timeout = _seconds(
        get(b"x-amzn-sagemaker-invocationtimeoutseconds"),
        "InvocationTimeoutSeconds",
        DEFAULT_TIMEOUT,
        MIN_TIMEOUT,
        MAX_TIMEOUT,
    )
    folder = config.output + (f"/{extension.strip('/')}" if extension else "")
    call = Invocation(
        body,
        get(b"x-amzn-sagemaker-content-type"),
        get(wire.STREAM_ACCEPT),
        get(wire.CUSTOM_ATTRIBUTES),
        inference_id.encode(),
        timeout=float(timeout),  # each container's, in place of its InvocationTimeoutInSeconds
    )
    check_ascii(call.content_type, call.accept, call.custom_attributes)
    return Job(
        inference_id,
        f"{folder}/{filename or unique + '.out'}",
        f"{config.failure}/{unique}-error.out",
        call,
        location,
        time.monotonic() + ttl,
        float(timeout),
    )


def accepted(job: Job) -> tuple[bytes, bytes]:
    """InvokeEndpointAsync's 202: its JSON body (the InferenceId) and header lines (where the result will
    be)."""
    extra = (
        b"X-Amzn-SageMaker-OutputLocation: " + job.output.encode() + b"\r\n"
        b"X-Amzn-SageMaker-FailureLocation: " + job.failure.encode() + b"\r\n"
    )
    return json.dumps({"InferenceId": job.inference_id}).encode(), extra


# How the front door makes the cycle an asynchronous request runs as (gateway.frontdoor): into a responder,
# on a variant, with a request id and the invocation; raises GatewayError if the variant has no route for it.
Cycles = Callable[["Responder", "Service", bytes, Invocation], "Cycle"]


class AsyncQueue:
    """One endpoint's queue and its workers."""

    def __init__(
        self,
        endpoint: str,
        config: AsyncConfig,
        variants: Variants,
        cycles: Cycles,
        journal: Journal | None = None,
        handed: Collection[Job] = (),
    ) -> None:
        """Queued first: `handed` (what the queue this one replaces had not run) and, with `journal`, the
        requests it holds for this endpoint (left by an earlier queue, or an earlier mce)."""
        self.endpoint = endpoint
        self.config = config
        self.variants = variants  # replaced when an update mounts new variants
        self._cycles = cycles
        self.journal = journal
        waiting = {job.key: job for job in handed}
        for job in journal.pending(endpoint) if journal is not None else ():
            waiting.setdefault(job.key, job)
        self._jobs: collections.deque[Job] = collections.deque(waiting.values())
        self._ready = asyncio.Event()
        if self._jobs:
            self._ready.set()
            logger.info("endpoint %s: %d asynchronous requests taken up again", endpoint, len(self._jobs))
        self._workers = [asyncio.create_task(self._work()) for _ in range(config.concurrency)]
        self._running = 0
        self._serving: list[Service] = []  # the variant each running request went to
        self._s3: Any = None
        self.expired = 0

    # metrics: SageMaker's ApproximateBacklogSize and ApproximateAgeOfOldestRequest
    @property
    def backlog(self) -> int:
        return len(self._jobs) + self._running

    @property
    def oldest_age(self) -> float:
        return time.monotonic() - self._jobs[0].enqueued if self._jobs else 0.0

    def submit(self, job: Job) -> None:
        if len(self._jobs) >= QUEUE_LIMIT:
            raise ServiceUnavailable(
                f"The asynchronous queue of endpoint {self.endpoint} is full ({QUEUE_LIMIT} requests); "
                "retry later."
            )
        if self.journal is not None:
            self.journal.add(self.endpoint, job)
        self._jobs.append(job)
        self._ready.set()

    def hand_over(self) -> list[Job]:
        """The requests not yet started, taken out of this queue (for the one that replaces it)."""
        jobs = list(self._jobs)
        self._jobs.clear()
        return jobs

    def answering(self, services: Collection[Service]) -> bool:
        """Whether a request is running on one of `services` (an update drains them)."""
        return any(service in services for service in self._serving)

    async def close(self, *, gone: bool = False) -> None:
        """Stop the workers. Requests not yet answered stay in the journal, to be run when the endpoint
        is served again; `gone`: the endpoint no longer exists, so each gets its failure object now."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        left = [*self._jobs, *(self.journal.pending(self.endpoint) if self.journal is not None else ())]
        unique = {job.key: job for job in left}.values()
        if gone:
            for job in unique:
                message = (
                    f"Endpoint {self.endpoint} stopped taking asynchronous requests (it was deleted, or "
                    "updated without an AsyncInferenceConfig) before this request was answered."
                )
                await self._finish(job, job.failure, message.encode())
        elif unique and self.journal is None:
            logger.warning("endpoint %s: %d asynchronous requests dropped unrun", self.endpoint, len(unique))

    async def _work(self) -> None:
        while True:
            while not self._jobs:
                self._ready.clear()
                await self._ready.wait()
            job = self._jobs.popleft()
            self._running += 1
            try:
                await self._run(job)
                if self.journal is not None:
                    self.journal.done(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "endpoint %s: asynchronous request %s failed", self.endpoint, job.inference_id
                )
                await self._finish(job, job.failure, b"The gateway failed while running the request.")
            finally:
                self._running -= 1

    async def _run(self, job: Job) -> None:
        if time.monotonic() > job.expires:
            self.expired += 1
            await self._store(job.failure, b"The request expired in the queue (RequestTTLSeconds).")
            return
        try:
            if job.input_location is not None:
                job.call.body = await asyncio.to_thread(self._read_input, job.input_location)
        except GatewayError as error:
            await self._store(job.failure, error.message.encode())
            return
        service = self.variants.pick(None)
        self._serving.append(service)
        try:
            await self._answer(job, service)
        finally:
            self._serving.remove(service)

    async def _answer(self, job: Job, service: Service) -> None:
        spool = Spool()
        try:  # the variant's containers now (an update may have replaced those it was checked against)
            cycle = self._cycles(spool, service, job.inference_id.encode(), job.call)
        except GatewayError as error:
            await self._store(job.failure, error.message.encode())
            return
        cycle.start()
        with spool.data:
            try:
                async with asyncio.timeout(job.timeout):
                    await spool.finished.wait()
            except TimeoutError:
                cycle.abandon()
                limit = f"{job.timeout:g} s (InvocationTimeoutSeconds)"
                await self._store(job.failure, f"The request did not finish within {limit}.".encode())
                return
            spool.data.seek(0)
            await self._store(job.output if spool.status == 200 else job.failure, spool.data)

    def _read_input(self, location: str) -> bytes:
        parts = urlsplit(location)
        try:
            if parts.scheme == "s3":
                from botocore.exceptions import BotoCoreError, ClientError

                try:
                    got = self._client().get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
                    data: bytes = got["Body"].read(MAX_INPUT + 1)
                except (ClientError, BotoCoreError) as exc:
                    raise ValidationError(f"InputLocation {location} cannot be read ({exc}).") from None
            else:
                with urllib.request.urlopen(location, timeout=60) as response:
                    data = response.read(MAX_INPUT + 1)
        except OSError as exc:
            raise ValidationError(f"InputLocation {location} cannot be read ({exc}).") from None
        if len(data) > MAX_INPUT:
            raise ValidationError(f"InputLocation {location} holds more than {MAX_INPUT} bytes.")
        return data

    async def _finish(self, job: Job, uri: str, data: bytes) -> None:
        await self._store(uri, data)
        if self.journal is not None:
            self.journal.done(job)

    async def _store(self, uri: str, data: bytes | IO[bytes]) -> None:
        parts = urlsplit(uri)
        try:
            await asyncio.to_thread(
                self._client().put_object, Bucket=parts.netloc, Key=parts.path.lstrip("/"), Body=data
            )
        except Exception as exc:  # botocore's errors: nowhere left to put this one but the log
            logger.error("endpoint %s: cannot write %s: %s", self.endpoint, uri, exc)

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client()
        return self._s3


class Spool:
    """Where an asynchronous request's cycle answers (gateway.cycle's Responder, for no client): the
    status, and the body spooled to memory or, past SPOOL_IN_MEMORY, a temporary file."""

    def __init__(self) -> None:
        self.status = 0
        self.data: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        self.finished = asyncio.Event()

    def whole(self, cycle: Cycle, reply: Reply, chunks: list[bytes], size: int) -> None:
        self.status = 200
        self.data.writelines(chunks)

    def start(self, cycle: Cycle, reply: Reply, length: int | None) -> None:
        self.status = 200

    def body(self, chunks: list[bytes]) -> None:
        self.data.writelines(chunks)

    def end(self) -> None:
        return None

    def document(
        self, cycle: Cycle, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        self.status = status
        self.data.write(body)

    def fail(self, cycle: Cycle, error: GatewayError, begun: bool) -> None:
        """The failure object holds the error as a client would have read it; an answer that broke off
        is a failure too (what came of it is kept)."""
        if begun:
            self.status = 502
        else:
            self.status = error.status
            self.data.write(json.dumps(error.members(), ensure_ascii=True).encode())

    async def drained(self) -> None:
        return None

    def done(self, cycle: Cycle) -> None:
        self.finished.set()


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _bytes(value: str | None) -> bytes | None:
    return value.encode("latin-1") if value is not None else None


def _seconds(value: bytes | None, member: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValidationError(f"Value for {member} must be an integer from {low} to {high}.")
    return int(value)
