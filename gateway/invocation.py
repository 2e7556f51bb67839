"""What a client asked for: one InvokeEndpoint request, checked against the runtime API's header rules.

botocore checks only `required` and `min`, never `max` or patterns (spec §1.2), so the server must. The
checks here are cheap byte tests (length, `isascii`, first byte), run once per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway import wire
from gateway.errors import ValidationError


@dataclass(slots=True)
class Invocation:
    """The part of a request that travels to a container: the body and the headers SageMaker forwards.

    Every other client header is dropped, as SageMaker strips headers that are not in the API (spec §1.2).
    """

    body: bytes
    content_type: bytes | None = None
    accept: bytes | None = None
    custom_attributes: bytes | None = None
    inference_id: bytes | None = None
    target_model: bytes | None = None
    traceparent: bytes | None = None  # W3C trace context, passed to every container


def invocation_from(headers: dict[bytes, bytes]) -> Invocation:
    """The forwarded headers of a request, checked against the runtime API's constraints (spec §1.2).

    Raises `ValidationError`. The body is set once it has arrived.
    """
    get = headers.get
    content_type, accept, attributes = get(wire.CONTENT_TYPE), get(wire.ACCEPT), get(wire.CUSTOM_ATTRIBUTES)
    for value, member in (
        (content_type, "ContentType"),
        (accept, "Accept"),
        (attributes, "CustomAttributes"),
    ):
        if value is not None and (len(value) > wire.MAX_HEADER_VALUE or not value.isascii()):
            raise ValidationError(
                f"Value for {member} must be at most {wire.MAX_HEADER_VALUE} US-ASCII characters."
            )
    target_model, inference_id = get(wire.TARGET_MODEL), get(wire.INFERENCE_ID)
    if target_model is not None:
        _check_printable(target_model, "TargetModel", wire.MAX_HEADER_VALUE)
        _check_relative_path(target_model)
    if inference_id is not None:
        _check_printable(inference_id, "InferenceId", wire.MAX_INFERENCE_ID)
    return Invocation(b"", content_type, accept, attributes, inference_id, target_model, get(b"traceparent"))


def _check_printable(value: bytes, member: str, limit: int) -> None:
    """`\\A\\S[\\p{Print}]*\\z`, 1 to `limit` characters (TargetModel, InferenceId)."""
    if not 1 <= len(value) <= limit:
        raise ValidationError(f"Value for {member} must be between 1 and {limit} characters long.")
    if not value.isascii() or not value.decode("ascii").isprintable() or value[:1].isspace():
        raise ValidationError(
            f"Value '{wire.shown(value)}' for {member} must be printable characters that do not start with a "
            "space."
        )


_ESCAPED = re.compile(rb"%[0-9A-Fa-f]{2}")


def _check_relative_path(value: bytes) -> None:
    """TargetModel is a path below the endpoint's model prefix and can never leave it (spec §4.3)."""
    parts = value.split(b"/")
    if (
        value.startswith(b"/")
        or b"\\" in value
        or b"//" in value
        or any(part in (b"..", b".") for part in parts)
        or _ESCAPED.search(value)
    ):
        raise ValidationError(
            f"TargetModel '{wire.shown(value)}' must be a path relative to the model prefix: "
            "no leading '/', no '.' or '..' segments, no '//', backslashes or percent-escapes."
        )
