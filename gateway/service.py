"""One endpoint variant as the front door serves it: its data plane (containers, router), its telemetry,
and the head its successful answers begin with (which names the variant).

The composition root (gateway.app) makes one per variant; a request cycle (gateway.cycle) is handed the
one its request reaches.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from gateway import wire
from gateway.dataplane import DataPlane
from gateway.errors import ValidationError
from gateway.telemetry import Telemetry


@dataclass(frozen=True, slots=True, eq=False)
class Service:
    dataplane: DataPlane
    telemetry: Telemetry
    variant: str = wire.VARIANT_NAME
    ok_head: bytes = field(init=False)  # `HTTP/1.1 200 OK` and x-Amzn-Invoked-Production-Variant

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok_head", wire.ok_head(self.variant))


class Variants:
    """An endpoint as mounted on the front door: its production variants, one chosen per request, by
    `X-Amzn-SageMaker-Target-Variant` or else at random by weight (SageMaker's InitialVariantWeight)."""

    __slots__ = ("_by_name", "_cumulative", "_only", "_services", "names")

    def __init__(self, variants: list[tuple[Service, float]]) -> None:
        self._services = [service for service, _ in variants]
        self._by_name = {service.variant.encode(): service for service in self._services}
        self.names = [service.variant for service in self._services]
        weights = [max(weight, 0.0) for _, weight in variants]
        total, running = sum(weights), 0.0
        self._cumulative = []
        for weight in weights:
            running += weight
            self._cumulative.append(running)
        # one variant, or one with all the weight: no draw per request
        serving = [service for service, weight in zip(self._services, weights, strict=True) if weight > 0]
        self._only = serving[0] if len(serving) == 1 or not total else None
        if not total:
            self._only = self._services[0]

    @property
    def services(self) -> list[Service]:
        return self._services

    def pick(self, target: bytes | None) -> Service:
        if target is None:
            if self._only is not None:
                return self._only
            point = random.random() * self._cumulative[-1]
            return self._services[bisect.bisect_right(self._cumulative, point)]
        service = self._by_name.get(target)
        if service is None:
            names = ", ".join(f"'{name}'" for name in self.names)
            raise ValidationError(
                f"Target variant '{wire.shown(target)}' is not a production variant of this endpoint; "
                f"its variants: {names}."
            )
        return service
