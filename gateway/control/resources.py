"""The local SageMaker's resources, typed: what each kind holds, and the status of those with a life cycle.

    Resource                 name, ARN, times, the Create request (less its Tags, which gateway.control.state
    │                        keeps by ARN)
    ├── ModelResource        CreateModel
    ├── ConfigResource       CreateEndpointConfig
    └── Hosted               a life cycle: Status, FailureReason; what it runs (`deployed`) and, during an
        │                    update, what it moves to (`pending`)
        ├── EndpointResource     deployed: a Deployed (its configuration and each variant's model, as they
        │                        were when it was created or updated)
        └── ComponentResource    deployed: a ComponentSpec (its specification, its model, its variant)

Requests stay as the client sent them (JSON objects botocore's model has already checked,
gateway.control.constraints): they are what Describe gives back. Everything mce derives from them, and reads
in more than one place, is a field or a method here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from gateway.launch.modeldata import Limits


class Kind(StrEnum):
    """The kinds of resource, as their ARNs spell them."""

    MODEL = "model"
    CONFIG = "endpoint-config"
    ENDPOINT = "endpoint"
    COMPONENT = "inference-component"

    @property
    def what(self) -> str:
        """How a message names the kind."""
        return {
            "endpoint-config": "endpoint configuration",
            "inference-component": "inference component",
        }.get(self.value, self.value)


class Status(StrEnum):
    """EndpointStatus and InferenceComponentStatus, as SageMaker reports them."""

    CREATING = "Creating"
    UPDATING = "Updating"
    IN_SERVICE = "InService"
    DELETING = "Deleting"
    FAILED = "Failed"
    DELETED = "Deleted"  # never reported: the resource is gone (the transition that removes it)

    @property
    def changing(self) -> bool:
        """A status DescribeEndpoint may hold its answer on (`mce up --describe-hold`)."""
        return self in (Status.CREATING, Status.UPDATING, Status.DELETING)

    @property
    def serving(self) -> bool:
        """Whether an endpoint in this status answers invocations (an update serves the old variants)."""
        return self in (Status.IN_SERVICE, Status.UPDATING)


@dataclass(eq=False)
class Resource:
    kind: ClassVar[Kind]
    name: str
    arn: str
    created: float
    modified: float
    request: dict[str, Any]  # the Create request, as the client sent it, less Tags


@dataclass(eq=False)
class ModelResource(Resource):
    kind = Kind.MODEL

    def containers(self) -> list[dict[str, Any]]:
        return containers_of(self.request)


@dataclass(eq=False)
class ConfigResource(Resource):
    kind = Kind.CONFIG

    @property
    def variants(self) -> list[dict[str, Any]]:
        return list(self.request["ProductionVariants"])

    @property
    def shadows(self) -> list[dict[str, Any]]:
        """ShadowProductionVariants: copies of the production traffic, whose answers nobody gets."""
        return list(self.request.get("ShadowProductionVariants") or [])


@dataclass(frozen=True)
class PlannedVariant:
    """One production variant of a Deployed: its configuration, and the model it runs (None: an endpoint
    made for inference components, which bring their own containers)."""

    name: str
    request: dict[str, Any]  # the ProductionVariant as configured
    model: dict[str, Any] | None  # the CreateModel request, as it was
    weight: float  # the desired weight: InitialVariantWeight, or UpdateEndpointWeightsAndCapacities'

    @property
    def serverless(self) -> dict[str, Any] | None:
        config = self.request.get("ServerlessConfig")
        return dict(config) if config is not None else None

    @property
    def startup_timeout(self) -> float | None:
        timeout = self.request.get("ContainerStartupHealthCheckTimeoutInSeconds")
        return float(timeout) if timeout is not None else None

    @property
    def limits(self) -> Limits:
        """What its model data may take: ModelDataDownloadTimeoutInSeconds and VolumeSizeInGB."""
        return model_data_limits(self.request)


@dataclass(frozen=True)
class Deployed:
    """What an endpoint runs: its endpoint configuration and each variant's model, as they were when the
    endpoint was created or updated (deleting either afterwards changes nothing that runs)."""

    config: str  # the EndpointConfigName
    request: dict[str, Any]  # the CreateEndpointConfig request
    models: dict[str, dict[str, Any] | None]  # VariantName -> its CreateModel request
    weights: dict[str, float] = field(default_factory=dict)  # VariantName -> desired weight, once changed
    asked: float = 0.0  # when CreateEndpoint or UpdateEndpoint asked for it (PendingDeploymentSummary)

    @property
    def variants(self) -> list[PlannedVariant]:
        return self._planned("ProductionVariants")

    @property
    def instances(self) -> int:
        """The production variants' InitialInstanceCount, added up (at least 1): what a traffic shift's
        INSTANCE_COUNT sizes are a share of."""
        return max(1, sum(int(v.request.get("InitialInstanceCount", 1)) for v in self.variants))

    @property
    def shadows(self) -> list[PlannedVariant]:
        """The shadow variants: each gets a copy of a share of the production variant's requests (its
        weight over the production variant's, at most all of them) and answers no one."""
        return self._planned("ShadowProductionVariants")

    def _planned(self, member: str) -> list[PlannedVariant]:
        return [
            PlannedVariant(
                v["VariantName"],
                v,
                self.models.get(v["VariantName"]),
                self.weights.get(v["VariantName"], float(v.get("InitialVariantWeight", 1.0))),
            )
            for v in self.request.get(member) or ()
        ]

    @property
    def for_components(self) -> bool:
        """Made for inference components: no variant names a model."""
        return all(model is None for model in self.models.values())

    @property
    def detailed_observability(self) -> bool:
        """MetricsConfig.EnableDetailedObservability: true unless the configuration says false (botocore's
        documentation: the default for new endpoint configurations)."""
        return bool((self.request.get("MetricsConfig") or {}).get("EnableDetailedObservability", True))

    @property
    def async_config(self) -> dict[str, Any] | None:
        return self.request.get("AsyncInferenceConfig")

    def weighted(self, weights: dict[str, float]) -> Deployed:
        return replace(self, weights={**self.weights, **weights})

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "request": self.request,
            "models": self.models,
            "weights": self.weights,
            "asked": self.asked,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployed:
        return cls(
            data["config"], data["request"], data["models"], data.get("weights", {}), data.get("asked", 0.0)
        )


@dataclass(frozen=True)
class ComponentSpec:
    """What an inference component runs: its Specification, its model's request as it was (for a ModelName),
    and the production variant it is placed on."""

    specification: dict[str, Any]
    model: dict[str, Any] | None
    variant: str

    @property
    def startup_timeout(self) -> float | None:
        timeout = self.specification.get("StartupParameters", {}).get(
            "ContainerStartupHealthCheckTimeoutInSeconds"
        )
        return float(timeout) if timeout is not None else None

    @property
    def limits(self) -> Limits:
        return model_data_limits(self.specification.get("StartupParameters", {}))

    def to_json(self) -> dict[str, Any]:
        return {"specification": self.specification, "model": self.model, "variant": self.variant}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComponentSpec:
        return cls(data["specification"], data["model"], data["variant"])


@dataclass(eq=False)
class Hosted(Resource):
    """A resource with a life cycle (gateway.control.endpoints.Endpoints.transition changes it)."""

    status: Status = Status.CREATING
    failure: str | None = None
    last_deployment: dict[str, Any] | None = None  # the DeploymentConfig of the last create or update


@dataclass(eq=False)
class EndpointResource(Hosted):
    kind = Kind.ENDPOINT
    deployed: Deployed | None = None
    pending: Deployed | None = None  # during an update: what it moves to
    document: bool = False  # started by `mce up DOC` from an endpoint document: not changed through the API


@dataclass(eq=False)
class ComponentResource(Hosted):
    kind = Kind.COMPONENT
    endpoint: str = ""  # the EndpointName, as the endpoint spells it
    deployed: ComponentSpec | None = None
    pending: ComponentSpec | None = None  # during an update: what it moves to


def model_data_limits(settings: dict[str, Any]) -> Limits:
    """The limits a ProductionVariant (or an inference component's StartupParameters) sets."""
    defaults = Limits()
    return Limits(
        float(settings.get("ModelDataDownloadTimeoutInSeconds", defaults.timeout)),
        int(settings.get("VolumeSizeInGB", defaults.volume_gb)),
    )


def containers_of(model: dict[str, Any]) -> list[dict[str, Any]]:
    """A CreateModel request's containers: Containers, or its PrimaryContainer."""
    containers = model.get("Containers")
    return list(containers) if containers is not None else [model["PrimaryContainer"]]
