"""What a client asked for: one InvokeEndpoint request, checked against the runtime API's header rules.

botocore checks only `required` and `min`, never `max` or patterns (spec §1.2), so the server must. The
checks here are cheap byte tests (length, `isascii`, first byte), run once per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway import wire
from gateway.errors import ValidationError


@dataclass(slots=True, init=False)
class Invocation:
    """The part of a request that travels to a container: the body and the headers SageMaker forwards.

    Every other client header is dropped, as SageMaker strips headers that are not in the API (spec §1.2).
    `__init__` is written out: the one `dataclass` would make is not compiled by mypyc (D54, D55).
    """

    body: bytes
    content_type: bytes | None
    accept: bytes | None
    custom_attributes: bytes | None
    inference_id: bytes | None
    target_model: bytes | None
    traceparent: bytes | None  # W3C trace context, passed to every container
    session_id: bytes | None  # SessionId: NEW_SESSION or an id the container issued (spec §1.6)
    stream: bool  # InvokeEndpointWithResponseStream: the answer is relayed as it comes
    timeout: float  # seconds the container has to answer; 0: its InvocationTimeoutInSeconds

    def __init__(
        self,
        body: bytes,
        content_type: bytes | None = None,
        accept: bytes | None = None,
        custom_attributes: bytes | None = None,
        inference_id: bytes | None = None,
        target_model: bytes | None = None,
        traceparent: bytes | None = None,
        session_id: bytes | None = None,
        stream: bool = False,
        timeout: float = 0.0,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.accept = accept
        self.custom_attributes = custom_attributes
        self.inference_id = inference_id
        self.target_model = target_model
        self.traceparent = traceparent
        self.session_id = session_id
        self.stream = stream
        self.timeout = timeout


def invocation_from(headers: dict[bytes, bytes], *, stream: bool = False) -> Invocation:
    """The forwarded headers of a request, checked against the runtime API's constraints (spec §1.2);
    `stream`: an InvokeEndpointWithResponseStream request, whose Accept is X-Amzn-SageMaker-Accept.

    Raises `ValidationError`. The body is set once it has arrived.
    """
    # headers.get spelled out each time: compiled (D54), a dict's get is a direct call, an alias of it is not
    accept = headers.get(wire.STREAM_ACCEPT) if stream else headers.get(wire.ACCEPT)
    content_type, attributes = headers.get(wire.CONTENT_TYPE), headers.get(wire.CUSTOM_ATTRIBUTES)
    # the three tested together first (the common case); check_ascii names the one at fault
    joined = (content_type or b"") + (accept or b"") + (attributes or b"")
    if len(joined) > wire.MAX_HEADER_VALUE or not joined.isascii():
        check_ascii(content_type, accept, attributes)
    target_model, inference_id = headers.get(wire.TARGET_MODEL), headers.get(wire.INFERENCE_ID)
    if target_model is not None:
        check_printable(target_model, "TargetModel", wire.MAX_HEADER_VALUE)
        _check_relative_path(target_model)
    if inference_id is not None:
        check_printable(inference_id, "InferenceId", wire.MAX_INFERENCE_ID)
    session_id = headers.get(wire.SESSION_ID)
    if session_id is not None:
        _check_session(session_id, stream)
    if wire.ENABLE_EXPLANATIONS in headers or wire.PREFIX_AWARE_ID in headers:
        _refuse_unconfigured(headers)
    return Invocation(
        b"",
        content_type,
        accept,
        attributes,
        inference_id,
        target_model,
        headers.get(b"traceparent"),
        session_id,
        stream,
    )


NEW_SESSION = b"NEW_SESSION"
_SESSION = re.compile(rb"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
MAX_SESSION_ID = 256


def _check_session(value: bytes, stream: bool) -> None:
    """SessionId: NEW_SESSION (not for a streaming call, spec §1.6) or an id as the API's pattern has it."""
    if value == NEW_SESSION:
        if stream:
            raise ValidationError(
                "SessionId NEW_SESSION is not supported by InvokeEndpointWithResponseStream: open the "
                "session with InvokeEndpoint, then stream with the id it returns."
            )
        return
    if len(value) > MAX_SESSION_ID or not _SESSION.fullmatch(value):
        raise ValidationError(
            f"Value '{wire.shown(value)}' for SessionId must be NEW_SESSION or match "
            f"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$ (at most {MAX_SESSION_ID} characters)."
        )


def check_ascii(content_type: bytes | None, accept: bytes | None, attributes: bytes | None) -> None:
    """ContentType, Accept and CustomAttributes: at most 1024 US-ASCII characters each (spec §1.2)."""
    for value, member in (
        (content_type, "ContentType"),
        (accept, "Accept"),
        (attributes, "CustomAttributes"),
    ):
        if value is not None and (len(value) > wire.MAX_HEADER_VALUE or not value.isascii()):
            raise ValidationError(
                f"Value for {member} must be at most {wire.MAX_HEADER_VALUE} US-ASCII characters."
            )


def check_printable(value: bytes, member: str, limit: int) -> None:
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


_COMPONENT = re.compile(rb"[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?")
MAX_COMPONENT_NAME = 63


def check_component(name: bytes) -> None:
    """InferenceComponentName, as the API's pattern has it (which component answers is the endpoint's:
    gateway.service.Variants)."""
    if len(name) > MAX_COMPONENT_NAME or not _COMPONENT.fullmatch(name):
        raise ValidationError(
            f"Value '{wire.shown(name)}' for InferenceComponentName must match "
            f"^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?$ (at most {MAX_COMPONENT_NAME} characters)."
        )


def _refuse_unconfigured(headers: dict[bytes, bytes]) -> None:
    """EnableExplanations and PrefixAwareId ask for what an endpoint must be configured for (a
    ClarifyExplainerConfig, RoutingStrategy PREFIX_AWARE), and no local endpoint is: checked against the
    API's rules, then refused, never dropped (D6)."""
    explanations = headers.get(wire.ENABLE_EXPLANATIONS)
    if explanations is not None:
        if not 1 <= len(explanations) <= wire.MAX_INFERENCE_ID:
            raise ValidationError("Value for EnableExplanations must be between 1 and 64 characters long.")
        raise ValidationError(
            "EnableExplanations is for an endpoint configured for online explainability (ExplainerConfig "
            "with a ClarifyExplainerConfig in its endpoint configuration); this endpoint has none."
        )
    prefix = headers.get(wire.PREFIX_AWARE_ID)
    if prefix is not None:
        check_printable(prefix, "PrefixAwareId", wire.MAX_INFERENCE_ID)
        raise ValidationError(
            "PrefixAwareId is for an endpoint whose production variant routes with RoutingStrategy "
            "PREFIX_AWARE; this endpoint's do not."
        )
