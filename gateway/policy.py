"""IAM-style identity policies for InvokeEndpoint, evaluated as IAM evaluates them (spec §6).

A statement has `Effect` (Allow|Deny), `Action`/`NotAction`, `Resource`/`NotResource` and an optional
`Condition` with `StringEquals`, `StringNotEquals`, `StringLike`, `StringNotLike` (and their `IfExists`
forms) on `sagemaker:TargetContainerHostname` and `sagemaker:TargetModel`. Evaluation: denied unless a
statement allows; an explicit Deny beats every Allow; several values of one key are OR, several keys and
operators are AND; a key absent from the request makes a condition false (true for the negated operators,
and for the IfExists forms). Wildcards: `*` any run of characters, `?` one; actions match case-insensitively,
resources and condition values case-sensitively (StringLike is case-sensitive).

Policies are parsed once, at start-up; every pattern is compiled then. A malformed policy is a
`PolicyError` naming the statement and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

CONDITION_KEYS = ("sagemaker:targetcontainerhostname", "sagemaker:targetmodel")
_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "StringNotLike"}


class PolicyError(Exception):
    """A policy that cannot be used; the message names where and what."""


def _glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


@dataclass(frozen=True)
class Condition:
    operator: str  # StringEquals, StringNotEquals, StringLike, StringNotLike
    if_exists: bool
    key: str  # lower-cased condition key
    values: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def holds(self, context: Mapping[str, str]) -> bool:
        value = context.get(self.key)
        negated = "Not" in self.operator
        if value is None:
            return self.if_exists or negated
        if self.operator.endswith("Like"):
            matched = any(p.fullmatch(value) for p in self.patterns)
        else:
            matched = value in self.values
        return not matched if negated else matched


@dataclass(frozen=True)
class Statement:
    name: str  # Sid, or its position: what a denial log names
    allow: bool
    actions: tuple[re.Pattern[str], ...]
    not_actions: bool
    resources: tuple[re.Pattern[str], ...]
    not_resources: bool
    conditions: tuple[Condition, ...]

    def applies(self, action: str, resource: str, context: Mapping[str, str]) -> bool:
        if any(p.fullmatch(action) for p in self.actions) == self.not_actions:
            return False
        if any(p.fullmatch(resource) for p in self.resources) == self.not_resources:
            return False
        return all(condition.holds(context) for condition in self.conditions)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    statement: str | None  # the statement that allowed or explicitly denied; None: nothing allowed
    explicit_deny: bool = False


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    def decide(self, action: str, resource: str, context: Mapping[str, str]) -> Decision:
        allowed_by = None
        for statement in self.statements:
            if statement.applies(action, resource, context):
                if not statement.allow:
                    return Decision(False, statement.name, explicit_deny=True)
                allowed_by = allowed_by or statement.name
        return Decision(allowed_by is not None, allowed_by)


def parse_policies(raw: object, where: str) -> Policy:
    """One policy document, or a list of them, as one set of statements."""
    documents = raw if isinstance(raw, list) else [raw]
    statements: list[Statement] = []
    for d, document in enumerate(documents):
        here = f"{where}[{d}]" if isinstance(raw, list) else where
        if not isinstance(document, dict):
            raise PolicyError(f"{here}: a policy is a JSON object with a Statement")
        unknown = set(document) - {"Version", "Id", "Statement"}
        if unknown:
            raise PolicyError(f"{here}.{min(unknown)}: unknown policy element")
        if document.get("Version", "2012-10-17") not in ("2012-10-17", "2008-10-17"):
            raise PolicyError(f"{here}.Version: {document['Version']!r} is not 2012-10-17")
        body = document.get("Statement")
        items = body if isinstance(body, list) else [body] if isinstance(body, dict) else None
        if not items:
            raise PolicyError(f"{here}.Statement: required, an object or a list of them")
        for s, item in enumerate(items):
            statements.append(_statement(item, f"{here}.Statement[{s}]"))
    return Policy(tuple(statements))


def _statement(item: object, here: str) -> Statement:
    if not isinstance(item, dict):
        raise PolicyError(f"{here}: a statement is a JSON object")
    unknown = set(item) - {
        "Sid",
        "Effect",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
        "Principal",
    }
    if unknown:
        raise PolicyError(f"{here}.{min(unknown)}: unknown statement element")
    name = item["Sid"] if isinstance(item.get("Sid"), str) else here
    effect = item.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{here}.Effect: {effect!r} is not Allow or Deny")
    actions, not_actions = _either(item, "Action", "NotAction", here)
    resources, not_resources = _either(item, "Resource", "NotResource", here)
    return Statement(
        name=name,
        allow=effect == "Allow",
        actions=tuple(_glob(a, ignore_case=True) for a in actions),
        not_actions=not_actions,
        resources=tuple(_glob(r) for r in resources),
        not_resources=not_resources,
        conditions=_conditions(item.get("Condition"), f"{here}.Condition"),
    )


def _either(item: dict[str, object], positive: str, negative: str, here: str) -> tuple[list[str], bool]:
    if (positive in item) == (negative in item):
        raise PolicyError(f"{here}.{positive}: give exactly one of {positive} and {negative}")
    field = positive if positive in item else negative
    return _strings(item[field], f"{here}.{field}"), field == negative


def _strings(value: object, here: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise PolicyError(f"{here}: a non-empty string or list of strings")
    return [str(v) for v in values]


def _conditions(raw: object, here: str) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise PolicyError(f"{here}: an object of operators")
    conditions = []
    for operator, keys in raw.items():
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS:
            raise PolicyError(
                f"{here}.{operator}: not supported (supported: {', '.join(sorted(_OPERATORS))}, and IfExists "
                "forms)"
            )
        if not isinstance(keys, dict) or not keys:
            raise PolicyError(f"{here}.{operator}: an object of condition keys")
        for key, values in keys.items():
            if key.lower() not in CONDITION_KEYS:
                raise PolicyError(
                    f"{here}.{operator}.{key}: not a condition key of InvokeEndpoint here "
                    "(sagemaker:TargetContainerHostname, sagemaker:TargetModel)"
                )
            strings = _strings(values, f"{here}.{operator}.{key}")
            conditions.append(
                Condition(
                    operator=base,
                    if_exists=operator.endswith("IfExists"),
                    key=key.lower(),
                    values=tuple(strings),
                    patterns=tuple(_glob(v) for v in strings) if base.endswith("Like") else (),
                )
            )
    return tuple(conditions)
