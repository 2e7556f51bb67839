"""What a client asked for: one InvokeEndpoint request, checked against the runtime API's header rules.

botocore checks only `required` and `min`, never `max` or patterns (spec §1.2), so the server must. The
checks here are cheap byte tests (length, `isascii`, first byte), run once per request.
"""

from __future__ import annotations

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


def check_headers(headers: dict[bytes, bytes]) -> None:
    """Raise `ValidationError` for a header that breaks the runtime API's constraints (spec §1.2)."""
    for name, member in _ASCII_HEADERS:
        value = headers.get(name)
        if value is not None and (len(value) > wire.MAX_HEADER_VALUE or not value.isascii()):
            raise ValidationError(
                f"Value for {member} must be at most {wire.MAX_HEADER_VALUE} US-ASCII characters."
            )
    _check_printable(headers.get(wire.TARGET_MODEL), "TargetModel", wire.MAX_HEADER_VALUE)
    _check_printable(headers.get(wire.INFERENCE_ID), "InferenceId", wire.MAX_INFERENCE_ID)
    variant = headers.get(wire.TARGET_VARIANT)
    if variant is not None and variant != _VARIANT:
        raise ValidationError(
            f"Target variant '{_text(variant)}' is not a production variant of this endpoint; "
            f"its only variant is '{wire.VARIANT_NAME}'."
        )


_ASCII_HEADERS = (
    (wire.CONTENT_TYPE, "ContentType"),
    (wire.ACCEPT, "Accept"),
    (wire.CUSTOM_ATTRIBUTES, "CustomAttributes"),
)
_VARIANT = wire.VARIANT_NAME.encode()


def _check_printable(value: bytes | None, member: str, limit: int) -> None:
    """`\\A\\S[\\p{Print}]*\\z`, 1 to `limit` characters (TargetModel, InferenceId)."""
    if value is None:
        return
    if not 1 <= len(value) <= limit:
        raise ValidationError(f"Value for {member} must be between 1 and {limit} characters long.")
    if not value.isascii() or not value.decode("ascii").isprintable() or value[:1].isspace():
        raise ValidationError(
            f"Value '{_text(value)}' for {member} must be printable characters that do not start with a space."
        )


def invocation_from(headers: dict[bytes, bytes], body: bytes) -> Invocation:
    return Invocation(
        body,
        headers.get(wire.CONTENT_TYPE),
        headers.get(wire.ACCEPT),
        headers.get(wire.CUSTOM_ATTRIBUTES),
        headers.get(wire.INFERENCE_ID),
        headers.get(wire.TARGET_MODEL),
    )


def _text(value: bytes) -> str:
    return value[:80].decode("ascii", "replace")
