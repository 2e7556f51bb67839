"""A control-plane request checked against botocore's model of its input, as AWS checks it, in AWS's words.

AWS reads the JSON body first: a member of the wrong JSON type is a `SerializationException`. Then it checks
every constraint of the model and reports all the broken ones in one `ValidationException`:

    2 validation errors detected: Value 'x...x' at 'endpointName' failed to satisfy constraint: Member must
    have length less than or equal to 63; Value 'x...x' at 'endpointName' failed to satisfy constraint:
    Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}

Members are named in lowerCamelCase, list items by their 1-based index (`productionVariants.1.member.
instanceType`), a missing required member is `Value null at '...'`, a map's keys and values are judged
together (`Value at 'primaryContainer.environment' failed to satisfy constraint: Map keys must satisfy
constraint: [...]`). Per member, length (or value) comes before pattern, then enum (D35 cites the published
messages these follow). Patterns are Java regular expressions matched whole
(`String.matches`); the `regex` module reads their `\\p{L}` classes. botocore's newer models dropped the
patterns' `^`, which AWS's messages show: it is put back in the message. Members the model does not know are
ignored, as AWS's JSON protocol ignores them (botocore never sends one).

Nothing here has side effects: the check runs before an operation touches state.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import regex
from botocore.model import ListShape, MapShape, Shape, StringShape, StructureShape

# Members whose pattern (`(https|s3)://...`) also lets a local path or file:// URL through: mce's own
# extension, so a model built on this machine deploys unchanged (the control plane then requires the path to
# lie in a folder it may read: gateway.control.api).
LOCAL_PATHS = frozenset({"ModelDataUrl"})


class SerializationError(Exception):
    """The body is not the operation's shape in JSON's types (AWS: SerializationException)."""


class ConstraintError(Exception):
    """Constraints of the model are broken; the message is AWS's, every violation in it."""

    def __init__(self, violations: list[str]) -> None:
        count = len(violations)
        super().__init__(
            f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(violations)
        )


def check(shape: StructureShape, params: dict[str, Any]) -> None:
    """SerializationError or ConstraintError unless `params` fits `shape` (an operation's input)."""
    violations = list(_structure(shape, params, ""))
    if violations:
        raise ConstraintError(violations)


def member_name(name: str) -> str:
    """A member as AWS's messages name it: `EndpointName` is `endpointName`."""
    return name[:1].lower() + name[1:]


def _at(path: str, name: str) -> str:
    return f"{path}.{member_name(name)}" if path else member_name(name)


def _structure(shape: StructureShape, value: dict[str, Any], path: str) -> Iterator[str]:
    required = set(shape.required_members)
    for name, member in shape.members.items():
        item = value.get(name)
        where = _at(path, name)
        if item is None:
            if name in required:
                yield f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
            continue
        if name in LOCAL_PATHS and isinstance(item, str) and _local(item):
            member = _unpatterned(member)
        yield from _value(member, item, where)


def _local(url: str) -> bool:
    scheme, colon, _ = url.partition(":")
    return not colon or scheme == "file" or not scheme.isalpha() or "/" in scheme


def _unpatterned(shape: Shape) -> Shape:
    """`shape` without its pattern (its length limits stay)."""
    kept = {key: value for key, value in shape.metadata.items() if key != "pattern"}
    return StringShape(shape.name, {"type": shape.type_name, **kept})


def _value(shape: Shape, value: object, path: str) -> Iterator[str]:
    _check_type(shape, value, path)
    if isinstance(shape, StructureShape):
        assert isinstance(value, dict)
        yield from _structure(shape, value, path)
        return
    if isinstance(shape, ListShape):
        assert isinstance(value, list)
        yield from (f"Value '{_shown(value)}' at '{path}' {phrase}" for phrase in _scalar(shape, value))
        for index, item in enumerate(value, 1):
            if item is not None:
                yield from _value(shape.member, item, f"{path}.{index}.member")
        return
    if isinstance(shape, MapShape):
        assert isinstance(value, dict)
        yield from (f"Value '{_shown(value)}' at '{path}' {phrase}" for phrase in _scalar(shape, value))
        for part, items in (("keys", list(value)), ("values", list(value.values()))):
            element = shape.key if part == "keys" else shape.value
            phrases: list[str] = []
            for item in items:
                if isinstance(element, (StructureShape, ListShape, MapShape)):
                    yield from _value(element, item, path)
                    continue
                if item is not None:
                    _check_type(element, item, path)
                    phrases += [p.removeprefix(_FAILED) for p in _scalar(element, item) if p not in phrases]
            if phrases:
                yield f"Value at '{path}' {_FAILED}Map {part} must satisfy constraint: [{', '.join(phrases)}]"
        return
    yield from (f"Value '{_shown(value)}' at '{path}' {phrase}" for phrase in _scalar(shape, value))


_FAILED = "failed to satisfy constraint: "


def _scalar(shape: Shape, value: Any) -> Iterator[str]:
    """The phrases of the constraints `value` breaks: length or value, pattern, enum."""
    meta = shape.metadata
    numeric = shape.type_name in ("integer", "long", "float", "double")
    measure = value if numeric else len(value) if shape.type_name != "boolean" else None
    what = "value" if numeric else "length"
    if measure is not None:
        if "min" in meta and measure < meta["min"]:
            yield f"{_FAILED}Member must have {what} greater than or equal to {_number(meta['min'])}"
        if "max" in meta and measure > meta["max"]:
            yield f"{_FAILED}Member must have {what} less than or equal to {_number(meta['max'])}"
    if shape.type_name == "string":
        pattern = meta.get("pattern")
        if pattern is not None and _compiled(pattern).fullmatch(value) is None:
            shown = pattern if pattern.startswith("^") else "^" + pattern
            yield f"{_FAILED}Member must satisfy regular expression pattern: {shown}"
        enum = shape.enum if isinstance(shape, StringShape) else None
        if enum and value not in enum:
            yield f"{_FAILED}Member must satisfy enum value set: [{', '.join(enum)}]"


@functools.cache
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern, regex.VERSION0)


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "blob": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "timestamp": (int, float, str),
    "structure": (dict,),
    "list": (list,),
    "map": (dict,),
}
_JSON_TYPE = {str: "a string", bool: "a boolean", int: "a number", float: "a number", dict: "an object"}


def _check_type(shape: Shape, value: object, path: str) -> None:
    expected = _TYPES.get(shape.type_name, (object,))
    if isinstance(value, bool) and bool not in expected:
        expected = ()  # JSON's true is no number
    if not isinstance(value, expected):
        found = _JSON_TYPE.get(type(value), "an array")
        raise SerializationError(
            f"Value at '{path}' is {found}, where the operation takes a {shape.type_name} ({shape.name})."
        )


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _shown(value: object) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        text = f"{value:.1f}"
    elif isinstance(value, (list, dict)):
        text = f"[{len(value)} items]" if isinstance(value, list) else f"{{{len(value)} entries}}"
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
    return text  # whole, as AWS quotes it (a body is at most 6 MB)
