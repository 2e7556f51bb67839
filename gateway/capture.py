"""Data capture (an endpoint configuration's DataCaptureConfig): a sample of each variant's requests and
answers, written to S3 as SageMaker writes them, for Model Monitor and the user's own readers.

The request path does one thing: for a request the sample takes, the front door wraps the cycle's
responder in a `cycle.Tee`, which keeps a copy of the answer as it passes and, once the answer is out,
hands it to `Capture.add`: one line in the variant's buffer. Everything else is off the request path:
the buffer is written to S3 every `FLUSH_SECONDS` (and once it passes `FLUSH_BYTES`), one object per hour
the events fall in, from a thread; whatever is buffered when the deployment stops (UpdateEndpoint,
DeleteEndpoint, SIGTERM) is written then. An object that cannot be written is kept and tried again at
the next flush; one that still cannot be written when the deployment stops goes to a local folder, named
as its S3 key, and the log says where.

The format (docs/real-time-hosting.md, with its sources): JSON lines under
`<DestinationS3Uri>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/<mm-ss-fff>-<uuid>.jsonl`, each
    {"captureData": {"endpointInput": {...}, "endpointOutput": {...}},
     "eventMetadata": {"eventId": ..., "inferenceId": ..., "inferenceTime": ...}, "eventVersion": "0"}
with `observedContentType`, `mode` (INPUT, OUTPUT), `data` and `encoding` (CSV or JSON as text for the
content types the configuration lists under CaptureContentTypeHeader, BASE64 for everything else).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.errors import ValidationError

if TYPE_CHECKING:
    from gateway.invocation import Invocation

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # how often a variant's captured events are written to S3
FLUSH_BYTES = 8 << 20  # ... or sooner, once this much is buffered
MAX_BUFFERED = 256 << 20  # past this (S3 unreachable for long), new events are dropped and counted
EVENT_VERSION = "0"


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """An endpoint configuration's DataCaptureConfig, as the data plane uses it."""

    bucket: str
    prefix: str  # the key prefix under the bucket, without a trailing slash ("" for the bucket's root)
    percentage: int  # InitialSamplingPercentage, 0..100
    inputs: bool
    outputs: bool
    csv: frozenset[bytes]  # CaptureContentTypeHeader.CsvContentTypes
    json: frozenset[bytes]  # ... JsonContentTypes
    kms_key: str | None = None

    @classmethod
    def from_request(cls, config: dict[str, Any] | None) -> CaptureConfig | None:
        """The capture a CreateEndpointConfig's DataCaptureConfig asks for; None when it has none or
        EnableCapture is false. Raises ValidationError for what cannot be captured here."""
        if config is None or not config.get("EnableCapture", True):
            return None
        destination = config["DestinationS3Uri"]
        parts = urlsplit(destination)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValidationError(
                f"DataCaptureConfig.DestinationS3Uri {destination!r}: the local SageMaker writes captured "
                "data to s3://bucket/prefix URIs only (an https:// URI is not supported here)."
            )
        modes = {option["CaptureMode"] for option in config["CaptureOptions"]}
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            percentage=int(config["InitialSamplingPercentage"]),
            inputs=bool(modes & {"Input", "InputAndOutput"}),
            outputs=bool(modes & {"Output", "InputAndOutput"}),
            csv=frozenset(t.encode().partition(b";")[0].strip() for t in header.get("CsvContentTypes", ())),
            json=frozenset(t.encode().partition(b";")[0].strip() for t in header.get("JsonContentTypes", ())),
            kms_key=config.get("KmsKeyId"),
        )

    def encoded(self, content_type: bytes | None, data: bytes) -> tuple[str, str]:
        """`data` as the capture writes it, and its encoding: text for the content types listed as CSV or
        JSON (by media type: `text/csv; charset=utf-8` is `text/csv`, as SageMaker's own captures show),
        if it is UTF-8; base64 for anything else."""
        if content_type is not None:
            media = content_type.partition(b";")[0].strip()
            listed = "CSV" if media in self.csv else "JSON" if media in self.json else None
            if listed is not None:
                try:
                    return data.decode("utf-8"), listed
                except UnicodeDecodeError:
                    pass
        return base64.b64encode(data).decode("ascii"), "BASE64"


Event = tuple[float, "Invocation", bytes | None, bytes | None]  # when, the request, the answer's type, body
Put = Callable[[str, str, bytes], None]  # bucket, key, body: writes one object (raises on failure)


class Capture:
    """One variant's data capture: which requests the sample takes, their events buffered, and the writer
    that takes them to S3."""

    def __init__(
        self,
        config: CaptureConfig,
        endpoint: str,
        variant: str,
        *,
        spill: Path,
        put: Put | None = None,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        """`spill`: the folder for what cannot be written to S3 by the time the variant stops; `put`: how
        an object is written (S3 through botocore's usual chain unless given)."""
        self.config = config
        self.endpoint = endpoint
        self.variant = variant
        self.spill = spill
        self.flush_seconds = flush_seconds
        self._put = put or _s3_put(config.kms_key)
        self._events: list[Event] = []
        self._size = 0
        self._unwritten: list[tuple[str, bytes]] = []  # objects whose writing failed: (key, body)
        self._held = 0  # bytes of those
        self._writer: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self.captured = 0
        self.dropped = 0
        self.objects = 0
        self.failures = 0

    # on the request path
    def sampled(self) -> bool:
        percentage = self.config.percentage
        return percentage >= 100 or (percentage > 0 and random.random() * 100 < percentage)

    def add(self, call: Invocation, output_type: bytes | None, output: bytes | None) -> None:
        """One answered request's event, buffered as it is: it is made into its JSON line off the request
        path, when the buffer is written."""
        if self._closed:
            return
        if self._size + self._held > MAX_BUFFERED:
            if not self.dropped:
                logger.error(
                    "%s/%s: %d MiB of captured data not yet written to S3: new events are dropped (and "
                    "counted in mce_capture_dropped_total) until it takes them",
                    self.endpoint,
                    self.variant,
                    MAX_BUFFERED >> 20,
                )
            self.dropped += 1
            return
        if not self.config.outputs:
            output = None
        self._events.append((time.time(), call, output_type, output))
        self._size += len(call.body) + (len(output) if output is not None else 0)
        self.captured += 1
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_every())
        elif self._size >= FLUSH_BYTES and self._wake is not None:
            self._wake.set()

    # off it
    async def _write_every(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered (and what failed before): one object per hour its events fall in."""
        events, self._events, self._size = self._events, [], 0
        by_hour = await asyncio.to_thread(_lines, self.config, self.endpoint, self.variant, events)
        pending = self._unwritten + [
            (f"{hour}/{_object_name(first)}", b"".join(lines)) for hour, (first, lines) in by_hour.items()
        ]
        self._unwritten = []
        for key, body in pending:
            try:
                await asyncio.to_thread(self._put, self.config.bucket, key, body)
            except Exception as error:  # S3 unreachable, no credentials, no bucket: tried again later
                self.failures += 1
                self._unwritten.append((key, body))
                logger.warning(
                    "%s/%s: captured data not written to s3://%s/%s (tried again in %g s): %s",
                    self.endpoint,
                    self.variant,
                    self.config.bucket,
                    key,
                    self.flush_seconds,
                    error,
                )
            else:
                self.objects += 1
        self._held = sum(len(body) for _, body in self._unwritten)

    async def close(self) -> None:
        """Write everything buffered; what S3 will not take goes to the spill folder."""
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self.flush()
        for key, body in self._unwritten:
            path = self.spill / self.config.bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            logger.error(
                "%s/%s: captured data could not be written to s3://%s/%s; kept in %s",
                self.endpoint,
                self.variant,
                self.config.bucket,
                key,
                path,
            )
        self._unwritten = []


def _lines(
    config: CaptureConfig, endpoint: str, variant: str, events: list[Event]
) -> dict[str, tuple[float, list[bytes]]]:
    """Each event's JSON line, by the key prefix of the hour it falls in, with the time of the hour's first
    event (run in a thread)."""
    by_hour: dict[str, tuple[float, list[bytes]]] = {}
    second, stamp, lines = -1, "", []
    for now, call, output_type, output in events:
        if int(now) != second:  # the time strings change once a second
            second = int(now)
            moment = time.gmtime(second)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)
            hour = "/".join(
                p for p in (config.prefix, endpoint, variant, time.strftime("%Y/%m/%d/%H", moment)) if p
            )
            lines = by_hour.setdefault(hour, (now, []))[1]
        sides = []
        if config.inputs:
            sides.append(_side(config, "endpointInput", "INPUT", call.content_type, call.body))
        if output is not None:
            sides.append(_side(config, "endpointOutput", "OUTPUT", output_type, output))
        inference = (
            f'"inferenceId":{_quoted(call.inference_id.decode("latin-1"))},'
            if call.inference_id is not None
            else ""
        )
        lines.append(
            (
                f'{{"captureData":{{{",".join(sides)}}},"eventMetadata":{{"eventId":"{_uuid()}",'
                f'{inference}"inferenceTime":"{stamp}"}},"eventVersion":"{EVENT_VERSION}"}}\n'
            ).encode()
        )
    return by_hour


_quoted = json.encoder.encode_basestring_ascii  # a JSON string, quotes and escapes; C where it can be


def _side(config: CaptureConfig, member: str, mode: str, content_type: bytes | None, data: bytes) -> str:
    text, encoding = config.encoded(content_type, data)
    observed = (
        f'"observedContentType":{_quoted(content_type.decode("latin-1"))},'
        if content_type is not None
        else ""
    )
    return f'"{member}":{{{observed}"mode":"{mode}","data":{_quoted(text)},"encoding":"{encoding}"}}'


def _object_name(first: float) -> str:
    """An object's name, after its first event's time (as SageMaker's are): mm-ss-fff-<uuid>.jsonl."""
    return f"{time.strftime('%M-%S', time.gmtime(first))}-{int(first * 1000) % 1000:03d}-{_uuid()}.jsonl"


def _uuid() -> str:
    """A random (version 4) UUID, from the random module: an event's id need not be secret, and
    os.urandom would be a system call per event."""
    h = f"{random.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _s3_put(kms_key: str | None) -> Put:
    client: list[Any] = []

    def put(bucket: str, key: str, body: bytes) -> None:
        if not client:
            from gateway.aws import s3_client

            client.append(s3_client())
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        client[0].put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/jsonl", **extra)

    return put
