"""AWS event-stream messages, as InvokeEndpointWithResponseStream answers (spec §1.5, §1.6).

A message is a prelude (total length, headers length, the prelude's CRC32), headers, a payload and the
CRC32 of everything before it; lengths are big-endian uint32. A header is its name's length (one byte),
the name, a type byte (7: a string) and the value's length (uint16) and value. The answer's body is a
sequence of messages, each in one HTTP chunk:

    PayloadPart          :message-type event,     :event-type PayloadPart,  payload = the container's bytes
    ModelStreamError     :message-type exception, :exception-type ...,      payload = {"Message", "ErrorCode"}
    InternalStreamFailure

botocore's parser is the judge (tests/test_streaming.py). The headers of a PayloadPart never change,
so they are encoded once.
"""

from __future__ import annotations

import json
import struct
import zlib

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_PRELUDE_AND_CRCS = _PRELUDE.size + 2 * _CRC.size
STRING = 7  # the header value type for a UTF-8 string

# InvokeEndpointWithResponseStream's ModelStreamError codes (botocore's model)
STREAM_BROKEN = "StreamBroken"
TIMEOUT = "ModelInvocationTimeExceeded"


def headers(*pairs: tuple[str, str]) -> bytes:
    """Encoded string headers, in order."""
    out = bytearray()
    for name, value in pairs:
        encoded_name, encoded_value = name.encode(), value.encode()
        out += bytes((len(encoded_name),)) + encoded_name + bytes((STRING,))
        out += len(encoded_value).to_bytes(2, "big") + encoded_value
    return bytes(out)


def message(encoded_headers: bytes, payload: bytes) -> bytes:
    """One event-stream message."""
    total = _PRELUDE_AND_CRCS + len(encoded_headers) + len(payload)
    prelude = _PRELUDE.pack(total, len(encoded_headers))
    prelude_crc = zlib.crc32(prelude)
    head = prelude + _CRC.pack(prelude_crc) + encoded_headers
    return head + payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


_PAYLOAD_PART = headers(
    (":event-type", "PayloadPart"),
    (":content-type", "application/octet-stream"),
    (":message-type", "event"),
)


def payload_part(data: bytes) -> bytes:
    """A PayloadPart event carrying `data` (boto3 gives it as `{'PayloadPart': {'Bytes': data}}`)."""
    return message(_PAYLOAD_PART, data)


def model_stream_error(text: str, code: str) -> bytes:
    """A ModelStreamError exception event: boto3 raises it while the client iterates."""
    return exception("ModelStreamError", {"Message": text, "ErrorCode": code})


def exception(name: str, members: dict[str, str]) -> bytes:
    encoded = headers(
        (":exception-type", name),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    )
    return message(encoded, json.dumps(members).encode())


# Reading messages (InvokeEndpointWithBidirectionalStream's request body: gateway.bidi)
MAX_MESSAGE = 16 << 20  # bytes of one message read at most (a request's PayloadPart, in its envelope)
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}  # header value types of a fixed size
_INTEGER = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


class EventStreamError(ValueError):
    """Bytes that are not an event stream (a length out of bounds, a CRC that does not match)."""


Headers = dict[str, str | bytes | int | bool]


class Decoder:
    """Event-stream messages out of a byte stream, each as soon as its last byte is in."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Headers, bytes]]:
        """The messages `data` completes, in order (EventStreamError for bytes that cannot be one)."""
        buffer = self._buffer
        buffer += data
        done = []
        while len(buffer) >= _PRELUDE.size + _CRC.size:
            total, header_length = _PRELUDE.unpack_from(buffer)
            if total > self.limit or total < _PRELUDE_AND_CRCS + header_length:
                raise EventStreamError(f"an event-stream message of {total} bytes (at most {self.limit})")
            if _CRC.unpack_from(buffer, _PRELUDE.size)[0] != zlib.crc32(buffer[: _PRELUDE.size]):
                raise EventStreamError("an event-stream message whose prelude CRC does not match")
            if len(buffer) < total:
                break
            whole = bytes(buffer[:total])
            del buffer[:total]
            done.append(decode(whole, header_length))
        return done

    @property
    def pending(self) -> int:
        """Bytes of a message begun and not yet complete."""
        return len(self._buffer)


def decode(whole: bytes, header_length: int | None = None) -> tuple[Headers, bytes]:
    """One complete message: its headers and payload."""
    if header_length is None:
        if len(whole) < _PRELUDE_AND_CRCS:
            raise EventStreamError("an event-stream message shorter than its prelude")
        total, header_length = _PRELUDE.unpack_from(whole)
        if total != len(whole):
            raise EventStreamError(f"an event-stream message says {total} bytes, has {len(whole)}")
    if _CRC.unpack_from(whole, len(whole) - _CRC.size)[0] != zlib.crc32(whole[: -_CRC.size]):
        raise EventStreamError("an event-stream message whose CRC does not match")
    start = _PRELUDE.size + _CRC.size
    return _headers(whole[start : start + header_length]), whole[start + header_length : -_CRC.size]


def _headers(raw: bytes) -> Headers:
    found: Headers = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode()
            kind = raw[at + 1 + size]
            at += 2 + size
            value: str | bytes | int | bool
            if kind in (6, 7):  # bytes, string: a uint16 length first
                length = int.from_bytes(raw[at : at + 2], "big")
                value = raw[at + 2 : at + 2 + length]
                value = value.decode() if kind == STRING else value
                at += 2 + length
            elif kind in _FIXED:
                width = _FIXED[kind]
                chunk = raw[at : at + width]
                value = (
                    (kind == 0)
                    if kind in (0, 1)
                    else (struct.unpack(_INTEGER[kind], chunk)[0] if kind in _INTEGER else chunk)
                )
                at += width
            else:
                raise EventStreamError(f"an event-stream header of unknown type {kind}")
            found[name] = value
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise EventStreamError(f"event-stream headers that cannot be read: {exc}") from None
    return found
