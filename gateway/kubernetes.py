"""The endpoint as Kubernetes manifests: `mce render kubernetes DOC -o DIR`, from the same document as
`mce up` and compose, so one document serves a laptop, a compose host and a cluster (D33).

One pod is one SageMaker instance: every container of the endpoint, each on ports of its own on the
pod's localhost (container i: SAGEMAKER_BIND_TO_PORT 9000+100i, SAGEMAKER_SAFE_PORT_RANGE the 16 after
it), with the Environment SageMaker gives it, and the gateway beside them as a native sidecar (an init
container with `restartPolicy: Always`, Kubernetes 1.29 and later), serving the endpoint document from a
ConfigMap. Probes are each container's own health check, the command compose runs
(gateway.compose.health_command). Model data: an `s3://` ModelDataUrl is fetched by an init step (the
gateway's image, `mce fetch-model`) into a volume mounted at /opt/ml/model; a local one is expected in
the container's image (its Backend.Build), as compose has it. MultiModel containers share a model cache
volume with the gateway at /opt/ml/models.

Written: configmap.yaml, deployment.yaml, service.yaml, hpa.yaml (autoscaling/v2, on CPU, or on
invocations per pod through the Prometheus adapter),
pdb.yaml and kustomization.yaml over them. `problems` is what schemas cannot check; render refuses
to write manifests it finds a problem in.

An endpoint of several production variants (`render_variants`, from what a SageMaker API describes:
gateway.control.described) is a folder of those per variant, and one Gateway API HTTPRoute that splits
traffic between their Services by weight and by X-Amzn-SageMaker-Target-Variant (`route_problems`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.compose import ENDPOINT_IN_CONTAINER, MODEL_CACHE, RenderError, health_command
from gateway.endpoint import BackendSpec, Container, ContainerMode, Endpoint, ResourcesSpec, memory_bytes
from gateway.launch import layout
from gateway.launch.ports import RANGE_SIZE, PortAllocation

GATEWAY_PORT = 8080
GATEWAY_IMAGE = "mce-gateway:latest"  # the project's Dockerfile
MODEL_DIR = "/opt/ml/model"
# Defaults where the document's Backend.Resources says nothing: what the project's own containers need,
# measured under `mce up` (a TorchServe worker and its JVM are the largest).
CONTAINER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
GATEWAY_RESOURCES = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
HPA_CPU_PERCENT = 70
HPA_MAX_REPLICAS = 4
_LOCAL_PORT = re.compile(r"127\.0\.0\.1[:/](\d+)")
FILES = ("configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")
# Production variants (render_variants): a Deployment each, one HTTPRoute over them.
ROUTE_PARENT = "gateway"  # the Gateway (Gateway API) the HTTPRoute attaches to, unless told another
VARIANT_LABEL = "sagemaker.amazonaws.com/variant"
TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"
ROUTE_WEIGHT_SCALE = 1000  # InitialVariantWeight 0.25 -> weight 250
ROUTE_WEIGHT_MAX = 1_000_000  # the largest weight Gateway API allows


def pod_ports(index: int) -> PortAllocation:
    """Container `index`'s ports on the pod's localhost: none shared, none the gateway's."""
    bind = 9000 + 100 * index
    return PortAllocation(bind=bind, first=bind + 1, last=bind + RANGE_SIZE)


INVOCATIONS_METRIC = "sagemaker_invocations_per_second"  # the Prometheus adapter's name for the rate


def render(
    endpoint: Endpoint,
    *,
    registry: str | None = None,
    source: str = "DOC",
    invocations_per_pod: float | None = None,
) -> dict[str, str]:
    """File name -> text of each manifest and the kustomization over them. With `invocations_per_pod`,
    the autoscaler keeps each pod near that many invocations a second (the Prometheus adapter's
    INVOCATIONS_METRIC, README "Run on Kubernetes") instead of near HPA_CPU_PERCENT of its CPU."""
    name = _dns_name(endpoint.EndpointName)
    labels = {"app.kubernetes.io/name": "mce-gateway", "app.kubernetes.io/instance": name}
    manifests = _manifests(endpoint, name, labels, None, registry, invocations_per_pod)
    found = problems(manifests.values())
    if found:
        raise RenderError("the manifests would be broken: " + "; ".join(found))
    header = _header(source)
    files = {file: header + _dump(manifest) for file, manifest in manifests.items()}
    files["kustomization.yaml"] = header + _dump(_kustomization(list(FILES)))
    return files


@dataclass(frozen=True)
class Variant:
    """A production variant: its name, InitialVariantWeight, InitialInstanceCount and endpoint document."""

    name: str
    weight: float
    endpoint: Endpoint
    instances: int = 1


def render_variants(
    name: str,
    variants: list[Variant],
    *,
    registry: str | None = None,
    source: str = "DOC",
    invocations_per_pod: float | None = None,
    parent: str = ROUTE_PARENT,
) -> dict[str, str]:
    """An endpoint of several production variants: each a Deployment of its own (InitialInstanceCount
    pods at least) (with its Service, ConfigMap, autoscaler and disruption budget) in a folder
    named after it, and one Gateway API HTTPRoute over their Services (`parent`: the Gateway it attaches
    to, NAME or NAMESPACE/NAME) that splits traffic by weight and sends a request naming a variant in
    X-Amzn-SageMaker-Target-Variant to that variant alone. `render` is the one-variant case."""
    if not variants:
        raise RenderError(f"endpoint {name} has no production variant with a model to render")
    base = _dns_name(name)
    files: dict[str, str] = {}
    header = _header(source)
    services: list[dict[str, Any]] = []
    folders = []
    for spec in variants:
        variant = spec.name
        instance = f"{base}-{_dns_name(variant)}"
        labels = {
            "app.kubernetes.io/name": "mce-gateway",
            "app.kubernetes.io/instance": instance,
            "app.kubernetes.io/part-of": base,
            VARIANT_LABEL: variant,
        }
        manifests = _manifests(
            spec.endpoint, instance, labels, variant, registry, invocations_per_pod, spec.instances
        )
        found = problems(manifests.values())
        if found:
            raise RenderError(f"variant {variant}: the manifests would be broken: " + "; ".join(found))
        folder = _dns_name(variant)
        folders.append(folder)
        services.append(manifests["service.yaml"])
        files.update({f"{folder}/{file}": header + _dump(m) for file, m in manifests.items()})
        files[f"{folder}/kustomization.yaml"] = header + _dump(_kustomization(list(FILES)))
    route = _route(base, variants, parent)
    found = route_problems(route, services)
    if found:
        raise RenderError("the HTTPRoute would be broken: " + "; ".join(found))
    files["httproute.yaml"] = header + _dump(route)
    files["kustomization.yaml"] = header + _dump(_kustomization([*folders, "httproute.yaml"]))
    return files


def _route(base: str, variants: list[Variant], parent: str) -> dict[str, Any]:
    """Weights as SageMaker's, in whole thousandths (an HTTPRoute's are integers), and a rule per
    variant for the requests that name it."""
    namespace, _, gateway = parent.rpartition("/")
    parent_ref: dict[str, Any] = {"name": gateway}
    if namespace:
        parent_ref["namespace"] = namespace

    def backend(variant: str) -> dict[str, Any]:
        return {"name": f"{base}-{_dns_name(variant)}", "port": GATEWAY_PORT}

    named = [
        {
            "matches": [{"headers": [{"name": TARGET_VARIANT_HEADER, "value": v.name}]}],
            "backendRefs": [backend(v.name)],
        }
        for v in variants
    ]
    weighted = [
        {**backend(v.name), "weight": min(ROUTE_WEIGHT_MAX, round(max(v.weight, 0.0) * ROUTE_WEIGHT_SCALE))}
        for v in variants
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": base,
            "labels": {"app.kubernetes.io/name": "mce-gateway", "app.kubernetes.io/instance": base},
        },
        "spec": {"parentRefs": [parent_ref], "rules": [*named, {"backendRefs": weighted}]},
    }


def _kustomization(resources: list[str]) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}


def _header(source: str) -> str:
    return (
        f"# Generated by `mce render kubernetes {source}`. Do not edit: edit the endpoint document and "
        "render again.\n"
    )


def _manifests(
    endpoint: Endpoint,
    name: str,
    labels: dict[str, str],
    variant: str | None,
    registry: str | None,
    invocations_per_pod: float | None,
    replicas: int = 1,
) -> dict[str, dict[str, Any]]:
    """The manifests of one pod template and what serves it, named `name`; `variant`: the production
    variant its gateway is (None: SageMaker's default, AllTraffic); `replicas`: the pods it starts with
    and keeps at least (SageMaker's InitialInstanceCount)."""
    served = _served(endpoint)
    containers, init, volumes = (
        [],
        [],
        [
            {"name": "endpoint", "configMap": {"name": f"{name}-endpoint"}},
        ],
    )
    gateway_mounts = [{"name": "endpoint", "mountPath": posixpath.dirname(ENDPOINT_IN_CONTAINER)}]
    # The cluster's network is the boundary (a NetworkPolicy, or --access for SigV4), and the Host its
    # clients send is not known here: the Service's name in any of its DNS forms, the route's hostnames,
    # a pod address. So any Host is answered (gateway.origins; README, "Kubernetes").
    gateway_args = ["serve", ENDPOINT_IN_CONTAINER, "--host", "0.0.0.0", "--port", str(GATEWAY_PORT)]
    gateway_args += ["--trust-network", "--allow-host", "*"]
    if variant is not None:
        gateway_args += ["--variant", variant]
    multi_model = False
    for index, container in enumerate(endpoint.containers):
        hostname = endpoint.hostname(index)
        spec, fetch = _container(hostname, container, pod_ports(index), registry)
        if fetch is not None:
            init.append(fetch)
            volumes.append({"name": f"model-{hostname}", "emptyDir": {}})
        if container.Mode is ContainerMode.MULTI_MODEL:
            multi_model = True
        containers.append(spec)
    if multi_model:
        volumes.append({"name": "models", "emptyDir": {}})
        gateway_mounts.append({"name": "models", "mountPath": MODEL_CACHE})
        gateway_args += ["--model-cache", MODEL_CACHE]
    init.append(
        {
            "name": "gateway",
            "image": _image(GATEWAY_IMAGE, registry),
            "restartPolicy": "Always",  # a native sidecar: up before the containers, stopped after them
            "args": gateway_args,
            "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
            "volumeMounts": gateway_mounts,
            "startupProbe": {"tcpSocket": {"port": GATEWAY_PORT}, "periodSeconds": 1, "failureThreshold": 30},
            "livenessProbe": {"tcpSocket": {"port": GATEWAY_PORT}, "periodSeconds": 10},
            # /ping is 200 once every container is healthy: only then does the Service send traffic
            "readinessProbe": {"httpGet": {"path": "/ping", "port": GATEWAY_PORT}, "periodSeconds": 5},
            "resources": GATEWAY_RESOURCES,
        }
    )
    return {
        "configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-endpoint", "labels": labels},
            "data": {posixpath.basename(ENDPOINT_IN_CONTAINER): served},
        },
        "deployment.yaml": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(GATEWAY_PORT),
                            "prometheus.io/path": "/metrics",
                        },
                    },
                    "spec": {
                        "initContainers": init,
                        "containers": containers,
                        "volumes": volumes,
                        "terminationGracePeriodSeconds": 60,  # SageMaker's 30 s, and the gateway's
                    },
                },
            },
        },
        "service.yaml": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}],
            },
        },
        "hpa.yaml": {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": replicas,
                "maxReplicas": max(HPA_MAX_REPLICAS, replicas),
                "metrics": [_scale_on(invocations_per_pod)],
            },
        },
        "pdb.yaml": {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
    }


def _scale_on(invocations_per_pod: float | None) -> dict[str, Any]:
    if invocations_per_pod is None:
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": HPA_CPU_PERCENT},
            },
        }
    if invocations_per_pod <= 0:
        raise RenderError(f"--invocations-per-pod {invocations_per_pod:g}: give a rate above 0")
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": INVOCATIONS_METRIC},
            "target": {"type": "AverageValue", "averageValue": f"{invocations_per_pod:g}"},
        },
    }


class _Plain(yaml.SafeDumper):
    """YAML without anchors and aliases (a shared dict is written out each time), and a string of
    several lines (the ConfigMap's document) as a block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Plain.add_representer(str, _string)


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_Plain, sort_keys=False, width=120)


def _served(endpoint: Endpoint) -> str:
    """The document the gateway serves in the pod: each container's addresses on the pod's ports, model
    data left to the containers (a MultiModel container's prefix stays: the gateway loads from it)."""
    backends: dict[int, BackendSpec] = {}
    for index, container in enumerate(endpoint.containers):
        found = layout.addresses(container.Backend.Protocol, pod_ports(index))
        backends[index] = BackendSpec(
            Protocol=container.Backend.Protocol,
            Model=container.Backend.Model,
            Url=found.url,
            ManagementUrl=found.management_url,
        )
    document = endpoint.with_backends(backends).model_dump(
        mode="json", exclude_none=True, exclude_defaults=True
    )
    for entry in _containers_of(document):
        if entry.get("Mode") != "MultiModel":
            entry.pop("ModelDataUrl", None)
    return _dump(document)


def _containers_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    if "Containers" in document:
        return list(document["Containers"])
    return [document["PrimaryContainer"]] if "PrimaryContainer" in document else []


def _container(
    hostname: str, container: Container, ports: PortAllocation, registry: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The pod's container, and the init step that fetches its model data (None: its image has it)."""
    if container.Image is None:
        raise RenderError(f"{hostname}: Kubernetes needs an Image to run this container")
    env = {
        **container.Environment,
        "SAGEMAKER_BIND_TO_PORT": str(ports.bind),
        "SAGEMAKER_SAFE_PORT_RANGE": f"{ports.first}-{ports.last}",
    }
    if container.Backend.Model is not None:
        env.setdefault("MCE_MODEL_NAME", container.Backend.Model)
    mounts: list[dict[str, Any]] = []
    fetch = None
    if container.Mode is ContainerMode.MULTI_MODEL:
        if not (container.ModelDataUrl or "").startswith("s3://"):
            raise RenderError(
                f"{hostname}: a MultiModel container's ModelDataUrl on Kubernetes is an s3:// prefix (the "
                f"gateway loads models from it; {container.ModelDataUrl} is not in the pod)"
            )
        env["SAGEMAKER_MULTI_MODEL"] = "true"
        mounts.append({"name": "models", "mountPath": MODEL_CACHE, "readOnly": True})
    elif container.ModelDataUrl is not None and container.ModelDataUrl.startswith(("s3://", "https://")):
        mounts.append({"name": f"model-{hostname}", "mountPath": MODEL_DIR, "readOnly": True})
        fetch = {
            "name": f"fetch-{hostname}",
            "image": _image(GATEWAY_IMAGE, registry),
            "args": ["fetch-model", container.ModelDataUrl, MODEL_DIR],
            "volumeMounts": [{"name": f"model-{hostname}", "mountPath": MODEL_DIR}],
            "resources": GATEWAY_RESOURCES,
        }
    command = health_command(container.Backend.Protocol, container.Backend.Model, ports)
    probe_exec = {"command": command[1:] if command[0] == "CMD" else ["sh", "-c", command[1]]}
    spec: dict[str, Any] = {
        "name": hostname,
        "image": _image(container.Image, registry),
        "args": ["serve"],  # as SageMaker runs it: docker run <image> serve
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "ports": [{"name": f"p{ports.bind}", "containerPort": ports.bind}],
        # the start-up window is SageMaker's default ContainerStartupHealthCheckTimeoutInSeconds, 240 s
        "startupProbe": {"exec": probe_exec, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 48},
        "livenessProbe": {
            "exec": probe_exec,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {"exec": probe_exec, "periodSeconds": 5, "timeoutSeconds": 3},
        "resources": resources(container.Backend.Resources),
    }
    if mounts:
        spec["volumeMounts"] = mounts
    return spec, fetch


def resources(spec: ResourcesSpec | None) -> dict[str, dict[str, str]]:
    """A container's requests and limits: the document's Backend.Resources, CONTAINER_RESOURCES where it
    says nothing (no CPU limit unless it asks for one: a throttled model server answers late)."""
    requests = dict(CONTAINER_RESOURCES["requests"])
    limits = dict(CONTAINER_RESOURCES["limits"])
    if spec is not None:
        requests.update({k: v for k, v in (("cpu", spec.Cpu), ("memory", spec.Memory)) if v is not None})
        limits.update(
            {k: v for k, v in (("cpu", spec.CpuLimit), ("memory", spec.MemoryLimit)) if v is not None}
        )
        if spec.Memory is not None and spec.MemoryLimit is None:
            if memory_bytes(spec.Memory) > memory_bytes(limits["memory"]):
                limits["memory"] = spec.Memory  # a limit is never below the request
    return {"requests": requests, "limits": limits}


def _image(image: str, registry: str | None) -> str:
    """`image` under `registry` (its own registry host, if it names one, replaced)."""
    if registry is None:
        return image
    first, _, rest = image.partition("/")
    path = rest if rest and ("." in first or ":" in first or first == "localhost") else image
    return f"{registry.rstrip('/')}/{path}"


def _dns_name(name: str) -> str:
    return name.lower().replace("_", "-")


def problems(manifests: Iterable[dict[str, Any]]) -> list[str]:
    """What a schema cannot see: the Deployment's selector matches its pod's labels; no two containers
    of the pod listen on one port; every probe's port is one its container listens on; every Backend
    URL of the gateway's document is a port of the pod."""
    found: list[str] = []
    listed = list(manifests)
    documents = [
        yaml.safe_load(text)
        for m in listed
        if m.get("kind") == "ConfigMap"
        for text in (m.get("data") or {}).values()
    ]
    for manifest in listed:
        if manifest.get("kind") != "Deployment":
            continue
        spec = manifest["spec"]
        template = spec["template"]
        selector = spec["selector"].get("matchLabels", {})
        labels = template["metadata"].get("labels", {})
        if any(labels.get(key) != value for key, value in selector.items()):
            found.append(f"the Deployment's selector {selector} does not match its pod's labels {labels}")
        pod = template["spec"]
        listening: dict[int, str] = {}
        everything = [*pod.get("initContainers", []), *pod["containers"]]
        for container in everything:
            ports = _listens(container)
            for port in ports:
                if port in listening:
                    found.append(f"{container['name']} and {listening[port]} both listen on port {port}")
                listening[port] = container["name"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind) or {}
                target = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                command = " ".join((probe.get("exec") or {}).get("command", []))
                asked = _LOCAL_PORT.search(command)
                if asked is not None:  # an exec probe: the port its command asks on localhost
                    target = int(asked[1])
                if target is not None and target not in ports and not _named(container, target):
                    found.append(
                        f"{container['name']}'s {kind} asks port {target}, which it does not listen on"
                    )
        for document in documents:
            for entry in _containers_of(document):
                url = (entry.get("Backend") or {}).get("Url", "")
                backend_port = int(url.rsplit(":", 1)[1].strip("/")) if url.count(":") == 2 else None
                if backend_port is None or backend_port not in listening:
                    found.append(f"the gateway's Backend {url} is not a port of the pod")
    return found


def route_problems(route: dict[str, Any], services: list[dict[str, Any]]) -> list[str]:
    """What a schema cannot see of the HTTPRoute: every backend is a rendered Service, on a port it
    serves; every variant has the rule for requests that name it; some variant has weight."""
    found: list[str] = []
    ports = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in services}
    rules = route["spec"]["rules"]
    for rule in rules:
        for ref in rule.get("backendRefs", []):
            if ref["name"] not in ports:
                found.append(f"the HTTPRoute sends traffic to {ref['name']}, which is not a rendered Service")
            elif ref.get("port") not in ports[ref["name"]]:
                found.append(f"the HTTPRoute sends traffic to port {ref.get('port')} of {ref['name']}")
    named = {
        header["value"]: rule["backendRefs"][0]["name"]
        for rule in rules
        for match in rule.get("matches", [])
        for header in match.get("headers", [])
        if header["name"] == TARGET_VARIANT_HEADER
    }
    for service in services:
        variant = service["metadata"]["labels"].get(VARIANT_LABEL)
        if named.get(variant) != service["metadata"]["name"]:
            found.append(f"a request naming variant {variant} does not reach {service['metadata']['name']}")
    weighted = [rule for rule in rules if not rule.get("matches")]
    if not weighted or not any(ref.get("weight", 1) > 0 for ref in weighted[-1]["backendRefs"]):
        found.append("no variant has weight: a request that names none would reach nothing")
    return found


def _listens(container: dict[str, Any]) -> set[int]:
    """The ports a container listens on: its declared ports and, for a model container, its
    SAGEMAKER_BIND_TO_PORT and SAGEMAKER_SAFE_PORT_RANGE."""
    ports = {p["containerPort"] for p in container.get("ports", [])}
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    if "SAGEMAKER_BIND_TO_PORT" in env:
        ports.add(int(env["SAGEMAKER_BIND_TO_PORT"]))
    if "SAGEMAKER_SAFE_PORT_RANGE" in env:
        low, high = (int(p) for p in env["SAGEMAKER_SAFE_PORT_RANGE"].split("-"))
        ports.update(range(low, high + 1))
    return ports


def _named(container: dict[str, Any], port: object) -> bool:
    return isinstance(port, str) and any(p.get("name") == port for p in container.get("ports", []))
