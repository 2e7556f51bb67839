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
