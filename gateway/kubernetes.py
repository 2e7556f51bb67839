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
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from typing import Any

import yaml

from gateway.compose import ENDPOINT_IN_CONTAINER, MODEL_CACHE, RenderError, health_command
from gateway.endpoint import BackendSpec, Container, ContainerMode, Endpoint
from gateway.launch import layout
from gateway.launch.ports import RANGE_SIZE, PortAllocation

GATEWAY_PORT = 8080
GATEWAY_IMAGE = "mce-gateway:latest"  # the project's Dockerfile
MODEL_DIR = "/opt/ml/model"
# Defaults where the document says nothing (it has no resource fields yet): what the project's own
# containers need, measured under `mce up` (a TorchServe worker and its JVM are the largest).
CONTAINER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
GATEWAY_RESOURCES = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
HPA_CPU_PERCENT = 70
HPA_MAX_REPLICAS = 4
_LOCAL_PORT = re.compile(r"127\.0\.0\.1[:/](\d+)")
FILES = ("configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")


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
    served = _served(endpoint)
    containers, init, volumes = (
        [],
        [],
        [
            {"name": "endpoint", "configMap": {"name": f"{name}-endpoint"}},
        ],
    )
    gateway_mounts = [{"name": "endpoint", "mountPath": posixpath.dirname(ENDPOINT_IN_CONTAINER)}]
    gateway_args = ["serve", ENDPOINT_IN_CONTAINER, "--host", "0.0.0.0", "--port", str(GATEWAY_PORT)]
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
    manifests: dict[str, dict[str, Any]] = {
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
                "replicas": 1,
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
                "minReplicas": 1,
                "maxReplicas": HPA_MAX_REPLICAS,
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
    found = problems(manifests.values())
    if found:
        raise RenderError("the manifests would be broken: " + "; ".join(found))
    header = (
        f"# Generated by `mce render kubernetes {source}`. Do not edit: edit the endpoint document and "
        "render again.\n"
    )
    files = {file: header + _dump(manifest) for file, manifest in manifests.items()}
    files["kustomization.yaml"] = header + _dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": list(FILES)}
    )
    return files


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
        "resources": CONTAINER_RESOURCES,
    }
    if mounts:
        spec["volumeMounts"] = mounts
    return spec, fetch


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
