"""One endpoint variant as the front door serves it: its data plane (containers, router), its telemetry,
and the head its successful answers begin with (which names the variant).

The composition root (gateway.app) makes one per variant; a request cycle (gateway.cycle) is handed the
one its request reaches.
"""

from __future__ import annotations

import bisect
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from gateway import wire
from gateway.dataplane import DataPlane
from gateway.errors import ModelError, ValidationError
from gateway.telemetry import Telemetry

if TYPE_CHECKING:
    from gateway.capture import Capture
    from gateway.serverless import Serverless

INSTANCE_ID = "local-1"  # the one local instance a variant runs on, in log stream names


@dataclass(slots=True)
class Logs:
    """Where the containers of one variant log: SageMaker's name for each log (the CloudWatch log group
    /aws/sagemaker/Endpoints/<EndpointName>, stream <Variant>/<InstanceId>/<ContainerHostname>) and, for
    a container mce launched, the file that holds it (filled in by gateway.launch.deployment)."""

    region: str
    account: str
    endpoint: str
    variant: str
    files: dict[str, Path] = field(default_factory=dict)

    @staticmethod
    def stream_path(endpoint: str, variant: str, container: str) -> PurePosixPath:
        return PurePosixPath("aws/sagemaker/Endpoints", endpoint, variant, INSTANCE_ID, container)

    def arn(self, container: str) -> str:
        group, stream = (
            f"/aws/sagemaker/Endpoints/{self.endpoint}",
            f"{self.variant}/{INSTANCE_ID}/{container}",
        )
        return f"arn:aws:logs:{self.region}:{self.account}:log-group:{group}:log-stream:{stream}"


@dataclass(frozen=True, slots=True, eq=False)
class Service:
    dataplane: DataPlane
    telemetry: Telemetry
    variant: str = wire.VARIANT_NAME
    logs: Logs | None = None
    capture: Capture | None = None  # its data capture, when its endpoint configuration has one
    serverless: Serverless | None = None  # a serverless variant's concurrency and cold starts
    ok_head: bytes = field(init=False)  # `HTTP/1.1 200 OK` and x-Amzn-Invoked-Production-Variant

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok_head", wire.ok_head(self.variant))

    def locate(self, error: ModelError) -> None:
        """Name the failed container's log in `error` (LogStreamArn, and the local file if there is one)."""
        if self.logs is not None and error.container:
            error.locate(self.logs.arn(error.container), self.logs.files.get(error.container))


class Variants:
    """An endpoint as mounted on the front door: its production variants, one chosen per request, by
    `X-Amzn-SageMaker-Target-Variant` or else at random by weight (SageMaker's InitialVariantWeight).

    An endpoint made for inference components (variants without a model) has `components` instead: each
    request names one (`X-Amzn-SageMaker-Inference-Component`), which answers it."""

    __slots__ = ("_by_name", "_cumulative", "_only", "_services", "components", "names", "shadow")

    def __init__(
        self,
        variants: list[tuple[Service, float]],
        components: dict[str, Service] | None = None,
        shadow: tuple[Service, float] | None = None,
    ) -> None:
        """`shadow`: a shadow variant and the share of requests it is sent a copy of (gateway.frontdoor)."""
        self.shadow = shadow
        self.components = (
            {name.encode(): service for name, service in components.items()}
            if components is not None
            else None
        )
        self._services = [service for service, _ in variants]
        self._by_name = {service.variant.encode(): service for service in self._services}
        self.names = [service.variant for service in self._services]
        weights = [min(weight, sys.float_info.max) if weight > 0 else 0.0 for _, weight in variants]
        top = max(weights, default=0.0)
        if top > 0:  # relative to the largest: weights near the float maximum add up without overflowing
            weights = [weight / top for weight in weights]
        total, running = sum(weights), 0.0
        self._cumulative = []
        for weight in weights:
            running += weight
            self._cumulative.append(running)
        # one variant, or one with all the weight: no draw per request
        serving = [service for service, weight in zip(self._services, weights, strict=True) if weight > 0]
        self._only = serving[0] if len(serving) == 1 else None
        if not total and self._services:  # no weight anywhere: the first variant answers
            self._only = self._services[0]

    @property
    def services(self) -> list[Service]:
        return self._services

    def pick(self, target: bytes | None, component: bytes | None = None) -> Service:
        if self.components is not None:
            return self._component(component)
        if component is not None:
            # SageMaker's words for an endpoint without inference components (spec §1.6)
            raise ValidationError(
                "Inference Component Name header is not allowed for endpoints to which you dont plan to "
                "deploy inference components. Please remove the Inference Component Name header and try "
                "again."
            )
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

    def _component(self, name: bytes | None) -> Service:
        assert self.components is not None
        if name is None:
            # SageMaker's words (spec §1.6)
            raise ValidationError(
                "Inference Component Name header is required for endpoints to which you plan to deploy "
                "inference components. Please include Inference Component Name header or consider using "
                "SageMaker models."
            )
        service = self.components.get(name)
        if service is None:
            deployed = ", ".join(sorted(n.decode() for n in self.components)) or "none"
            raise ValidationError(
                f"Inference component {wire.shown(name)} is not deployed on this endpoint (its components: "
                f"{deployed})."
            )
        return service

    @property
    def every(self) -> list[Service]:
        """Every service the endpoint runs: its variants', its components' and its shadow variant's."""
        return [
            *self._services,
            *(self.components.values() if self.components is not None else ()),
            *((self.shadow[0],) if self.shadow is not None else ()),
        ]


class Shifting(Variants):
    """An endpoint while an update moves its traffic (gateway.control.shifting): `share` of its requests
    reach the new fleet (these variants), the others `old`'s, each fleet picking a variant as it would."""

    __slots__ = ("old", "share")

    def __init__(
        self,
        variants: list[tuple[Service, float]],
        old: Variants,
        share: float,
        components: dict[str, Service] | None = None,
        shadow: tuple[Service, float] | None = None,
    ) -> None:
        super().__init__(variants, components, shadow)
        self.old = old
        self.share = share

    def pick(self, target: bytes | None, component: bytes | None = None) -> Service:
        if random.random() >= self.share:
            return self.old.pick(target, component)
        return super().pick(target, component)

    @property
    def every(self) -> list[Service]:
        return [*super().every, *self.old.every]
