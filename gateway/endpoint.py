"""The endpoint document: a SageMaker CreateModel request (plus our `Backend` extension), validated once.

Shapes and limits follow botocore's SageMaker model and the developer guide (spec §2). Field-level rules
(patterns, lengths, enums, unknown keys) are pydantic's; cross-field rules (unique hostnames, all named or
none, Direct needs names, Environment size across containers) are in `_check_rules`. Every problem is
reported with its field path, all at once, as `DocumentError`.
"""

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails

from gateway.errors import DocumentError, DocumentIssue

# Patterns as SageMaker writes them (Java full-match semantics); anchored here because pydantic searches.
HOSTNAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
ENDPOINT_NAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9])*"
MODEL_NAME_PATTERN = r"[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?"
ENV_KEY_PATTERN = r"[a-zA-Z_][a-zA-Z0-9_]*"

HOSTNAME_RE = re.compile(HOSTNAME_PATTERN)
ENDPOINT_NAME_RE = re.compile(ENDPOINT_NAME_PATTERN)
MAX_CONTAINERS = 15
MAX_ENVIRONMENT_ENTRIES = 100
MAX_ENVIRONMENT_BYTES = 32 * 1024  # keys + values, per map and across all containers (spec §2.1)

SECONDS = 1.0
DEFAULT_INVOCATION_TIMEOUT = 60 * SECONDS  # containers must answer within 60 s (spec §1.2)
DEFAULT_CONNECT_TIMEOUT = 5 * SECONDS
MODEL_LOAD_WAIT = 60 * SECONDS  # a multi-model invocation waits this long for its model, then 429 (spec §4.2)
MODEL_LOAD_TIMEOUT = 360 * SECONDS  # while the download and load go on for up to this long (spec §4.2)


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


Hostname = Annotated[str, StringConstraints(max_length=63, pattern=_anchored(HOSTNAME_PATTERN))]
EndpointNameText = Annotated[str, StringConstraints(max_length=63, pattern=_anchored(ENDPOINT_NAME_PATTERN))]
ModelNameText = Annotated[str, StringConstraints(max_length=63, pattern=_anchored(MODEL_NAME_PATTERN))]
EnvKey = Annotated[str, StringConstraints(max_length=1024, pattern=_anchored(ENV_KEY_PATTERN))]
EnvValue = Annotated[str, StringConstraints(max_length=1024)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ExecutionMode(StrEnum):
    SERIAL = "Serial"
    DIRECT = "Direct"


class ContainerMode(StrEnum):
    SINGLE_MODEL = "SingleModel"
    MULTI_MODEL = "MultiModel"


class BackendProtocol(StrEnum):
    """How the gateway talks to a container; each has a module in `gateway.backends`."""

    SAGEMAKER = "sagemaker"  # the generic container contract: GET /ping, POST /invocations (spec §5)
    TORCHSERVE_REST = "torchserve-rest"  # POST /predictions/{model}[/{version}]
    TORCHSERVE_GRPC = "torchserve-grpc"  # InferenceAPIsService.Predictions
    TFSERVING_REST = "tfserving-rest"  # POST /v1/models/{model}[/versions/{v}|/labels/{l}]:predict
    TFSERVING_GRPC = "tfserving-grpc"  # tensorflow.serving.PredictionService/Predict
    KSERVE_V2_REST = "kserve-v2-rest"  # POST /v2/models/{model}[/versions/{v}]/infer (Triton, KServe, ...)
    KSERVE_V2_GRPC = "kserve-v2-grpc"  # inference.GRPCInferenceService/ModelInfer

    @property
    def is_grpc(self) -> bool:
        return self.value.endswith("-grpc")

    @property
    def needs_model(self) -> bool:
        return self is not BackendProtocol.SAGEMAKER


HttpUrl = Annotated[str, StringConstraints(pattern=r"^http://[^/\s]+/?$")]


Argv = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


class LaunchSpec(_Shape):
    """How `mce up` starts the container, with SageMaker's environment: natively, a command (no Docker);
    or under Docker, the container's `Image` run as SageMaker runs it (gateway.launch.docker).

    In `Command` and `Prepare`, a leading `python` is the gateway's own interpreter, and arguments that name
    an existing file or folder relative to the document's folder are made absolute. Under Docker, `Command`
    is the image's arguments (`serve` when absent, as SageMaker gives it).
    """

    Runtime: Literal["native", "docker"] = "native"
    Command: Argv | None = None
    # Run once before the container starts, e.g. a model build; it should be cheap when nothing changed.
    Prepare: Argv | None = None


class BuildSpec(_Shape):
    """How `mce render compose` builds the container's image (paths relative to the document's folder)."""

    Context: Annotated[str, StringConstraints(min_length=1)] = "."
    Dockerfile: Annotated[str, StringConstraints(min_length=1)]


class ExampleSpec(_Shape):
    """A request the container answers, for the ready-to-paste examples `mce up` prints."""

    ContentType: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = "application/json"
    Body: Annotated[str, StringConstraints(max_length=8192)]
    TargetModel: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None  # MultiModel


CpuQuantity = Annotated[str, StringConstraints(pattern=r"^([1-9][0-9]*m|[0-9]+(\.[0-9]{1,3})?)$")]
MemoryQuantity = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(Ki|Mi|Gi|Ti)$")]


class ResourcesSpec(_Shape):
    """What the container needs where a scheduler asks: Kubernetes' requests and limits (`mce render
    kubernetes`) and compose's limits (`mce render compose`), in Kubernetes' quantities ("500m" or "2"
    CPUs, "512Mi" or "2Gi"). Absent: the defaults the README gives. `mce up` enforces MemoryLimit for a
    container it runs under Docker (`docker run --memory`; a serverless variant's MemorySizeInMB becomes it),
    and nothing else."""

    Cpu: CpuQuantity | None = None  # requested
    Memory: MemoryQuantity | None = None  # requested
    CpuLimit: CpuQuantity | None = None
    MemoryLimit: MemoryQuantity | None = None


def cpu_cores(quantity: str) -> float:
    """ "500m" -> 0.5, "2" -> 2.0."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_bytes(quantity: str) -> int:
    """A memory quantity in bytes: 512Mi is 536870912."""
    power = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4}[quantity[-2:]]
    return int(quantity[:-2]) * (1 << (10 * power))


class MultiModelSpec(_Shape):
    """How the gateway runs a MultiModel container's models (SageMaker's part, spec §4): our extension.

    Without a budget, models are unloaded only when the container answers 507 (out of memory); with one,
    least recently used idle models are also unloaded before a load while the container's processes
    (launched by `mce up`) use more than `MemoryBudgetInMiB`. The disk cache of unpacked artifacts keeps
    under `DiskCacheInMiB`, deleting the least recently used models that are not loaded."""

    MemoryBudgetInMiB: Annotated[int, Field(gt=0)] | None = None
    DiskCacheInMiB: Annotated[int, Field(gt=0)] | None = None
    ModelLoadWaitInSeconds: Seconds = MODEL_LOAD_WAIT
    ModelLoadTimeoutInSeconds: Seconds = MODEL_LOAD_TIMEOUT


class BackendSpec(_Shape):
    """Our extension: how the gateway reaches one container."""

    Protocol: BackendProtocol = BackendProtocol.SAGEMAKER
    # A container that is already running: http://host:port, or grpc://host:port for the -grpc protocols.
    # Absent: the container is launched natively (`mce up`) and its addresses come from its port allocation.
    Url: Annotated[str, StringConstraints(pattern=r"^(http|grpc)://[^/\s]+/?$")] | None = None
    # TorchServe's management API, where a model's workers tell whether it can serve (readiness).
    ManagementUrl: HttpUrl | None = None
    # The model's name (and version) inside a TorchServe, TF Serving or Open Inference Protocol server.
    Model: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=256)] | None
    ) = None
    ModelVersion: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)] | None
    ) = None
    ModelLabel: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)] | None
    ) = None
    # TF Serving: the signature used when a request names none (default serving_default).
    SignatureName: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    InvocationTimeoutInSeconds: Seconds = DEFAULT_INVOCATION_TIMEOUT
    ConnectTimeoutInSeconds: Seconds = DEFAULT_CONNECT_TIMEOUT
    Launch: LaunchSpec | None = None
    Build: BuildSpec | None = None
    Example: ExampleSpec | None = None
    MultiModel: MultiModelSpec | None = None  # only for a container in Mode MultiModel
    Resources: ResourcesSpec | None = None  # for Kubernetes and compose


class ImageConfigSpec(_Shape):
    RepositoryAccessMode: Literal["Platform", "Vpc"]
    RepositoryAuthConfig: dict[str, str] | None = None


class MultiModelConfigSpec(_Shape):
    ModelCacheSetting: Literal["Enabled", "Disabled"] = "Enabled"


def _no_parent(path: str) -> str:
    if ".." in path:
        raise ValueError("a metrics path has no '..'")
    return path


class MetricsEndpointSpec(_Shape):
    # botocore's MetricsEndpointPath pattern, whole (its lookahead as a check of its own); SageMaker's default
    MetricsEndpointPath: Annotated[
        str, StringConstraints(pattern=r"^/[a-zA-Z0-9/_.\-]+$", max_length=256), AfterValidator(_no_parent)
    ] = "/metrics"
    # how often SageMaker publishes them to CloudWatch; accepted (mce scrapes when its /metrics is scraped)
    MetricPublishFrequencyInSeconds: Literal[10, 30, 60, 120, 180, 240, 300] | None = None


class ContainerMetricsSpec(_Shape):
    """A ContainerDefinition's ContainerMetricsConfig: where the container serves Prometheus metrics on its
    serving port (SageMaker: /metrics on port 8080 unless told otherwise)."""

    MetricsEndpoints: list[MetricsEndpointSpec] = Field(default_factory=list, max_length=1)

    @property
    def path(self) -> str:
        return self.MetricsEndpoints[0].MetricsEndpointPath if self.MetricsEndpoints else "/metrics"


class Container(_Shape):
    """A `ContainerDefinition` (spec §2.1) with our `Backend`."""

    ContainerHostname: Hostname | None = None
    Image: Annotated[str, StringConstraints(max_length=255, pattern=r"^\S+$")] | None = None
    ImageConfig: ImageConfigSpec | None = None
    Mode: ContainerMode = ContainerMode.SINGLE_MODEL
    # SageMaker accepts s3:// and https:// only; locally a path, a .tar.gz or a file:// URL is the point.
    # For a MultiModel container it is the prefix its models are found under: a folder, file:// or s3://.
    ModelDataUrl: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    Environment: dict[EnvKey, EnvValue] = Field(default_factory=dict, max_length=MAX_ENVIRONMENT_ENTRIES)
    MultiModelConfig: MultiModelConfigSpec | None = None
    # scraped and shown on the gateway's /metrics with the container's labels (gateway.metrics)
    ContainerMetricsConfig: ContainerMetricsSpec | None = None
    Backend: BackendSpec = Field(default_factory=lambda: BackendSpec())


class ExecutionConfigSpec(_Shape):
    Mode: ExecutionMode


S3Uri = Annotated[str, StringConstraints(pattern=r"^s3://\S+$", max_length=512)]


class AsyncOutputSpec(_Shape):
    S3OutputPath: S3Uri
    S3FailurePath: S3Uri | None = None
    KmsKeyId: str | None = None  # accepted as CreateEndpointConfig has it; nothing is encrypted locally
    NotificationConfig: dict[str, object] | None = None  # accepted; no notifications are sent locally


class AsyncClientSpec(_Shape):
    MaxConcurrentInvocationsPerInstance: Annotated[int, Field(ge=1, le=1000)] | None = None


class AsyncInferenceSpec(_Shape):
    """CreateEndpointConfig's AsyncInferenceConfig (our extension of the document): InvokeEndpointAsync."""

    OutputConfig: AsyncOutputSpec
    ClientConfig: AsyncClientSpec | None = None


class Endpoint(_Shape):
    """A CreateModel request, as the gateway serves it."""

    EndpointName: EndpointNameText
    ModelName: ModelNameText | None = None
    PrimaryContainer: Container | None = None
    Containers: list[Container] | None = Field(default=None, min_length=1, max_length=MAX_CONTAINERS)
    InferenceExecutionConfig: ExecutionConfigSpec | None = None
    AsyncInferenceConfig: AsyncInferenceSpec | None = None  # from CreateEndpointConfig: InvokeEndpointAsync
    # Accepted so that `create_model` arguments can be reused as they are; meaningless locally.
    ExecutionRoleArn: str | None = None
    # Under Docker: an internal network with no route out (gateway.launch.docker, D35); natively, nothing.
    EnableNetworkIsolation: bool | None = None
    VpcConfig: dict[str, list[str]] | None = None
    Tags: list[dict[str, str]] | None = None

    @property
    def mode(self) -> ExecutionMode:
        """Serial unless told otherwise, as in SageMaker (spec §2.2)."""
        config = self.InferenceExecutionConfig
        return config.Mode if config is not None else ExecutionMode.SERIAL

    def layout(self) -> str:
        """How the containers serve, for banners: `Direct: a, b`, `Serial: a -> b`, or the one container."""
        names = [self.hostname(i) for i in range(len(self.containers))]
        if len(names) == 1:
            kind = (
                "multi-model container"
                if self.containers[0].Mode is ContainerMode.MULTI_MODEL
                else "one container"
            )
            return f"{kind}: {names[0]}"
        return f"{self.mode.value}: " + (", " if self.mode is ExecutionMode.DIRECT else " -> ").join(names)

    @property
    def containers(self) -> list[Container]:
        if self.Containers is not None:
            return self.Containers
        assert self.PrimaryContainer is not None, "parse_endpoint checks that one of the two is given"
        return [self.PrimaryContainer]

    def with_backends(self, backends: dict[int, BackendSpec]) -> "Endpoint":
        """A copy with the `Backend` of the containers at these positions replaced."""
        containers = [
            c.model_copy(update={"Backend": backends[i]}) if i in backends else c
            for i, c in enumerate(self.containers)
        ]
        if self.Containers is not None:
            return self.model_copy(update={"Containers": containers})
        return self.model_copy(update={"PrimaryContainer": containers[0]})

    def hostname(self, index: int) -> str:
        """The container's name for routing, logs and errors; auto-assigned from its position if unset."""
        return self.containers[index].ContainerHostname or f"container-{index + 1}"


def _environment_bytes(env: object) -> int:
    if not isinstance(env, dict):
        return 0
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in env.items())


def load_endpoint(path: str | Path) -> Endpoint:
    """Read, parse and validate an endpoint document (YAML or JSON). Raises `DocumentError`."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(source, [DocumentIssue("", f"cannot read the file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(source, [DocumentIssue("", "the file is not UTF-8 text")]) from exc
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DocumentError(source, [DocumentIssue("", f"not valid {_syntax(path)}: {exc}")]) from exc
    return parse_endpoint(raw, source=source, default_name=path.stem)


def _syntax(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def parse_endpoint(raw: object, *, source: str, default_name: str) -> Endpoint:
    """Validate an already-parsed document. `EndpointName` defaults to `default_name` (the file's stem)."""
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise DocumentError(source, [DocumentIssue("", f"expected a mapping at the top, found {kind}")])
    document = {"EndpointName": default_name, **raw}
    issues: list[DocumentIssue] = []
    endpoint: Endpoint | None = None
    try:
        endpoint = Endpoint.model_validate(document)
    except PydanticValidationError as exc:
        issues = [document_issue(error) for error in exc.errors()]
        if "EndpointName" not in raw:
            issues = [
                DocumentIssue(i.path, f"{i.message} (the file's stem is the default; set EndpointName)")
                if i.path == "EndpointName"
                else i
                for i in issues
            ]
    issues += _check_rules(document)
    if issues or endpoint is None:
        raise DocumentError(source, issues)
    return endpoint


def _check_rules(document: dict[str, object]) -> list[DocumentIssue]:
    """The cross-field rules of CreateModel and multi-container endpoints (spec §2.1, §2.2, §3).

    They read the raw document, so they are reported together with any shape problems; values of the
    wrong type are skipped here (the shape check reports them).
    """
    primary, listed = document.get("PrimaryContainer"), document.get("Containers")
    if (primary is None) == (listed is None):
        return [DocumentIssue("Containers", "give exactly one of Containers and PrimaryContainer")]
    if listed is not None:
        if not isinstance(listed, list):
            return []
        containers = [c if isinstance(c, dict) else {} for c in listed]
        paths = [f"Containers[{index}]" for index in range(len(containers))]
    else:
        containers = [primary if isinstance(primary, dict) else {}]
        paths = ["PrimaryContainer"]
    config = document.get("InferenceExecutionConfig")
    direct = isinstance(config, dict) and config.get("Mode") == ExecutionMode.DIRECT.value
    issues: list[DocumentIssue] = []

    names = [c.get("ContainerHostname") for c in containers]
    if direct:
        issues += [
            DocumentIssue(f"{path}.ContainerHostname", "required in Direct mode")
            for path, name in zip(paths, names, strict=True)
            if name is None
        ]
    elif any(name is not None for name in names):
        issues += [
            DocumentIssue(
                f"{path}.ContainerHostname",
                "required because another container sets one (all containers are named or none)",
            )
            for path, name in zip(paths, names, strict=True)
            if name is None
        ]
    first_seen: dict[object, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name in first_seen:
            issues.append(
                DocumentIssue(
                    f"{paths[index]}.ContainerHostname",
                    f"'{name}' is already the hostname of {paths[first_seen[name]]}; hostnames are unique",
                )
            )
        else:
            first_seen[name] = index

    for path, container in zip(paths, containers, strict=True):
        issues += _backend_rules(f"{path}.Backend", container.get("Backend"))
        issues += _launch_rules(path, container)
        issues += _multi_model_rules(path, container)

    multi_model = [i for i, c in enumerate(containers) if c.get("Mode") == ContainerMode.MULTI_MODEL.value]
    if not direct and len(multi_model) > 1:
        issues.append(
            DocumentIssue(
                f"{paths[multi_model[1]]}.Mode", "a Serial pipeline holds at most one MultiModel container"
            )
        )

    sizes = [_environment_bytes(c.get("Environment")) for c in containers]
    issues += [
        DocumentIssue(
            f"{path}.Environment", f"keys and values total {size} bytes; at most {MAX_ENVIRONMENT_BYTES}"
        )
        for path, size in zip(paths, sizes, strict=True)
        if size > MAX_ENVIRONMENT_BYTES
    ]
    if (
        len(containers) > 1
        and sum(sizes) > MAX_ENVIRONMENT_BYTES
        and all(s <= MAX_ENVIRONMENT_BYTES for s in sizes)
    ):
        issues.append(
            DocumentIssue(
                "Containers",
                f"Environment keys and values total {sum(sizes)} bytes across all containers; "
                f"at most {MAX_ENVIRONMENT_BYTES}",
            )
        )
    return issues


def _launch_rules(path: str, container: dict[str, object]) -> list[DocumentIssue]:
    """A native launch needs its command; a Docker one the image it runs."""
    backend = container.get("Backend")
    launch = backend.get("Launch") if isinstance(backend, dict) else None
    if not isinstance(launch, dict):
        return []
    if launch.get("Runtime", "native") == "docker":
        if container.get("Image") is None:
            return [
                DocumentIssue(f"{path}.Image", "required for Backend.Launch.Runtime docker: what it runs")
            ]
    elif launch.get("Command") is None:
        return [DocumentIssue(f"{path}.Backend.Launch.Command", "required: the command that starts it")]
    return []


def _backend_rules(path: str, backend: object) -> list[DocumentIssue]:
    """A protocol needs the matching URL scheme, and a model name unless it is the generic contract."""
    if not isinstance(backend, dict):
        return []
    try:
        protocol = BackendProtocol(backend.get("Protocol", BackendProtocol.SAGEMAKER.value))
    except ValueError:
        return []  # reported by the shape check
    issues = []
    url = backend.get("Url")
    scheme = "grpc" if protocol.is_grpc else "http"
    if isinstance(url, str) and not url.startswith(f"{scheme}://"):
        issues.append(
            DocumentIssue(f"{path}.Url", f"Protocol {protocol.value} is reached at a {scheme}:// URL")
        )
    if protocol.needs_model and backend.get("Model") is None:
        issues.append(
            DocumentIssue(
                f"{path}.Model", f"required for Protocol {protocol.value}: the model's name in the server"
            )
        )
    version, label = backend.get("ModelVersion"), backend.get("ModelLabel")
    if version is not None and label is not None:
        issues.append(DocumentIssue(f"{path}.ModelLabel", "give ModelVersion or ModelLabel, not both"))
    if label is not None and not protocol.value.startswith("tfserving"):
        issues.append(DocumentIssue(f"{path}.ModelLabel", "only TF Serving has version labels"))
    if protocol is BackendProtocol.TFSERVING_GRPC and isinstance(version, str) and not version.isdigit():
        issues.append(
            DocumentIssue(f"{path}.ModelVersion", f"'{version}' is not a number; TF Serving versions are")
        )
    if backend.get("SignatureName") is not None and not protocol.value.startswith("tfserving"):
        issues.append(DocumentIssue(f"{path}.SignatureName", "only TF Serving models have signatures"))
    issues += _resource_rules(f"{path}.Resources", backend.get("Resources"))
    return issues


def _resource_rules(path: str, resources: object) -> list[DocumentIssue]:
    """A limit is at least what is requested."""
    if not isinstance(resources, dict):
        return []
    try:
        spec = ResourcesSpec.model_validate(resources)
    except PydanticValidationError:
        return []  # reported by the shape check
    issues = []
    if spec.Cpu and spec.CpuLimit and cpu_cores(spec.CpuLimit) < cpu_cores(spec.Cpu):
        issues.append(DocumentIssue(f"{path}.CpuLimit", f"{spec.CpuLimit} is less than Cpu {spec.Cpu}"))
    if spec.Memory and spec.MemoryLimit and memory_bytes(spec.MemoryLimit) < memory_bytes(spec.Memory):
        issues.append(
            DocumentIssue(f"{path}.MemoryLimit", f"{spec.MemoryLimit} is less than Memory {spec.Memory}")
        )
    return issues


def _multi_model_rules(path: str, container: dict[str, object]) -> list[DocumentIssue]:
    """A MultiModel container speaks SageMaker's multi-model API (spec §4.1) and has a prefix to load from."""
    backend = container.get("Backend")
    backend = backend if isinstance(backend, dict) else {}
    if container.get("Mode") != ContainerMode.MULTI_MODEL.value:
        if "MultiModel" in backend:
            return [DocumentIssue(f"{path}.Backend.MultiModel", "only for a container with Mode: MultiModel")]
        if container.get("MultiModelConfig") is not None:
            return [DocumentIssue(f"{path}.MultiModelConfig", "only for a container with Mode: MultiModel")]
        return []
    issues = []
    protocol = backend.get("Protocol", BackendProtocol.SAGEMAKER.value)
    if protocol != BackendProtocol.SAGEMAKER.value:
        issues.append(
            DocumentIssue(
                f"{path}.Backend.Protocol",
                "a MultiModel container is reached over its multi-model API (Protocol sagemaker), not "
                f"{protocol}",
            )
        )
    url = container.get("ModelDataUrl")
    if url is None:
        issues.append(
            DocumentIssue(
                f"{path}.ModelDataUrl", "required for Mode MultiModel: the prefix models are loaded from"
            )
        )
    elif isinstance(url, str) and url.startswith(("http://", "https://")):
        issues.append(
            DocumentIssue(
                f"{path}.ModelDataUrl", "a MultiModel prefix is a folder, a file:// URL or an s3:// URL"
            )
        )
    elif isinstance(url, str) and url.endswith((".tar.gz", ".tgz")):
        issues.append(
            DocumentIssue(
                f"{path}.ModelDataUrl", "for Mode MultiModel this is a prefix (a folder), not one artifact"
            )
        )
    return issues


_PATTERN_NAMES = {
    _anchored(HOSTNAME_PATTERN): HOSTNAME_PATTERN,
    _anchored(ENDPOINT_NAME_PATTERN): ENDPOINT_NAME_PATTERN,
    _anchored(MODEL_NAME_PATTERN): MODEL_NAME_PATTERN,
    _anchored(ENV_KEY_PATTERN): ENV_KEY_PATTERN,
}


def document_issue(error: ErrorDetails) -> DocumentIssue:
    """One pydantic error as a path and a rule a person can act on."""
    path = _path(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error.get("input")
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        message = f"{_show(value)} does not match {_PATTERN_NAMES.get(pattern, pattern.strip('^$'))}"
    elif kind == "string_too_long":
        message = f"{_show(value)} is longer than {ctx.get('max_length')} characters"
    elif kind == "string_too_short":
        message = "must not be empty"
    elif kind == "too_long":
        what = {"Environment": "entries", "Containers": "containers"}.get(path.rsplit(".", 1)[-1], "items")
        actual = ctx.get("actual_length") or (len(value) if isinstance(value, (list, dict)) else "too many")
        message = f"{actual} {what}; at most {ctx.get('max_length')}"
    elif kind == "too_short":
        message = f"needs at least {ctx.get('min_length')} item(s)"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required"
    elif kind in ("enum", "literal_error"):
        message = f"{_show(value)} is not one of {ctx.get('expected')}"
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    else:
        message = f"{error['msg']} (got {_show(value)})"
    return DocumentIssue(path, message)


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":  # pydantic's marker: the problem is the mapping key named just before
            text += " (key)"
        else:
            text += f".{part}" if text else part
    return text


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_servable(endpoint: Endpoint, source: str) -> None:
    """`mce serve` fronts running containers: each one needs a `Backend.Url`."""
    where = "Containers" if endpoint.Containers is not None else "PrimaryContainer"
    issues = [
        DocumentIssue(
            f"{where}[{index}].Backend.Url" if where == "Containers" else f"{where}.Backend.Url",
            "required to serve: the address of the running container, e.g. http://127.0.0.1:9001",
        )
        for index, container in enumerate(endpoint.containers)
        if container.Backend.Url is None
    ]
    if issues:
        raise DocumentError(source, issues)
