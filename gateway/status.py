"""`mce status URL`: each container of a running endpoint at a glance, from its /ping and two /metrics
scrapes; for a local SageMaker (`mce up`), every endpoint, its status, variants and containers, from the
control plane's ListEndpoints, DescribeEndpoint and ListInferenceComponents (a component is a row of its
own, `<variant>/<component>`) and two /metrics scrapes. Under the table, what the
launched containers warned of (a framework container's version that differs from the installed one)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, str], float]  # (metric sample name, container) -> value


def scrape(url: str) -> Samples:
    text = _metrics(f"{url}/metrics").decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" in sample.labels:
                continue
            samples[(sample.name, sample.labels.get("container", ""))] = sample.value
    return samples


Labelled = dict[tuple[str, str, str, str], float]  # (sample, endpoint, variant, container) -> value


def scrape_all(url: str) -> Labelled:
    samples: Labelled = {}
    for family in text_string_to_metric_families(_metrics(f"{url}/metrics").decode()):
        for sample in family.samples:
            if "le" not in sample.labels:
                labels = sample.labels
                key = (
                    sample.name,
                    labels.get("endpoint", ""),
                    labels.get("variant", ""),
                    labels.get("container", ""),
                )
                samples[key] = sample.value
    return samples


def _control(url: str, operation: str, params: dict[str, object]) -> dict[str, object] | None:
    """A control-plane call (unsigned; signed with the caller's credentials if the gateway asks), or None
    when `url` is not a local SageMaker."""
    body = json.dumps(params).encode()
    headers = {"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"}
    request = urllib.request.Request(url + "/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        with error:
            if error.code != 403:
                return None
    signed = _signed(url + "/", "POST", body, headers)
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url + "/", data=body, method="POST", headers=signed), timeout=60
        ) as response:
            answer = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:  # signed and still refused: a one-endpoint gateway (mce serve)
        with error:
            return None


def local_status(url: str, interval: float = 1.0) -> str | None:
    """Every endpoint of a local SageMaker: status, variants (weight) and containers with their rates and
    latency; None if `url` is not one."""
    listed = _control(url, "ListEndpoints", {"MaxResults": 100})
    if listed is None:
        return None
    endpoints = [e for e in listed.get("Endpoints", []) if isinstance(e, dict)]  # type: ignore[attr-defined]
    found = _control(url, "ListInferenceComponents", {"MaxResults": 100}) or {}
    components = [c for c in found.get("InferenceComponents", []) if isinstance(c, dict)]  # type: ignore[attr-defined]
    if len(endpoints) <= 1 and not components:
        try:  # one endpoint answers /ping, and the per-container view says more about it
            health(url)
            return None
        except (OSError, ValueError, KeyError):
            pass
    first = scrape_all(url)
    time.sleep(interval)
    second = scrape_all(url)
    rows = [("endpoint", "status", "variant", "weight", "container", "req/s", "errors/s", "latency ms")]
    for summary in sorted(endpoints, key=lambda e: str(e["EndpointName"])):
        name = str(summary["EndpointName"])
        described = _control(url, "DescribeEndpoint", {"EndpointName": name}) or {}
        status = str(described.get("EndpointStatus", summary.get("EndpointStatus", "")))
        variants = described.get("ProductionVariants") or []
        served = [  # (label shown, metrics' variant label, weight, status)
            (str(v["VariantName"]), str(v["VariantName"]), f"{v.get('CurrentWeight', 1.0):g}", status)
            for v in variants  # type: ignore[attr-defined]
        ]
        served += [  # a component's metrics carry its name as the variant
            (
                f"{c['VariantName']}/{c['InferenceComponentName']}",
                str(c["InferenceComponentName"]),
                "-",
                str(c["InferenceComponentStatus"]),
            )
            for c in sorted(components, key=lambda c: str(c["InferenceComponentName"]))
            if c["EndpointName"] == name
        ]
        if not served:
            rows.append((name, status, "-", "-", "-", "-", "-", "-"))
        for shown, label, weight, state in served:
            containers = sorted(
                {key[3] for key in second if key[1] == name and key[2] == label and key[3]}
            ) or ["-"]
            for container in containers:
                labels = (name, label, container)

                def delta(metric: str, labels: tuple[str, str, str] = labels) -> float:
                    return second.get((metric, *labels), 0.0) - first.get((metric, *labels), 0.0)

                count = second.get(("sagemaker_container_latency_seconds_count", *labels), 0.0)
                total = second.get(("sagemaker_container_latency_seconds_sum", *labels), 0.0)
                errors = delta("sagemaker_invocation_4xx_errors_total") + delta(
                    "sagemaker_invocation_5xx_errors_total"
                )
                rows.append(
                    (
                        name,
                        state,
                        shown,
                        weight,
                        container,
                        f"{delta('sagemaker_invocations_total') / interval:.1f}",
                        f"{errors / interval:.1f}",
                        f"{total / count * 1000:.2f}" if count else "-",
                    )
                )
    if len(rows) == 1:
        return "no endpoints (create one with boto3's sagemaker client, or mce up DOC)"
    return _table(rows) + warnings(url, with_endpoint=True)


def warnings(url: str, *, with_endpoint: bool) -> str:
    """The launched containers' warnings (/metrics' mce_container_warning), as lines under the table, or
    "" when there are none."""
    lines = []
    for family in text_string_to_metric_families(_metrics(f"{url}/metrics").decode()):
        if family.name != "mce_container_warning":
            continue
        for sample in family.samples:
            labels = sample.labels
            where = labels.get("container", "")
            if with_endpoint:
                where = f"{labels.get('endpoint', '')}/{labels.get('variant', '')}/{where}"
            lines.append(f"  {where}: {labels.get('warning', '')}")
    return "\n\nwarnings:\n" + "\n".join(sorted(lines)) if lines else ""


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _signed(url: str, method: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """`headers` and a SigV4 signature with the caller's AWS credentials (a gateway under --access)."""
    import os

    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise PermissionError(
            "the gateway runs with --access: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a key of its "
            "access file"
        )
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    SigV4Auth(credentials, "sagemaker", region).add_auth(request)
    return dict(request.headers.items())


def _metrics(url: str) -> bytes:
    """GET /metrics; signed with the caller's AWS credentials when the gateway asks for it (`--access`)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            if error.code != 403:
                raise
    signed = urllib.request.Request(url, headers=_signed(url, "GET", b"", {}))
    with urllib.request.urlopen(signed, timeout=5) as response:
        return bytes(response.read())


def health(url: str) -> dict[str, str]:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
            report = json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            report = json.loads(error.read())
    return {
        name: "Healthy" if state["status"] == "Healthy" else f"Unhealthy: {state.get('reason', '')}"
        for name, state in report["containers"].items()
    }


def status(url: str, interval: float = 1.0) -> str:
    """The table: health, request and error rates over `interval`, mean latency, CPU and memory; for a
    MultiModel container, its loaded models and cache hit ratio."""
    first = scrape(url)
    time.sleep(interval)  # a rate needs two readings
    second = scrape(url)
    states = health(url)
    rows = [("container", "health", "req/s", "errors/s", "latency ms", "CPU %", "memory %", "models (hit %)")]

    def delta(metric: str, name: str) -> float:
        return second.get((metric, name), 0.0) - first.get((metric, name), 0.0)

    for name, state in states.items():
        count = second.get(("sagemaker_container_latency_seconds_count", name), 0.0)
        total = second.get(("sagemaker_container_latency_seconds_sum", name), 0.0)
        errors = delta("sagemaker_invocation_4xx_errors_total", name) + delta(
            "sagemaker_invocation_5xx_errors_total", name
        )
        cpu = second.get(("sagemaker_cpu_utilization_percent", name))
        memory = second.get(("sagemaker_memory_utilization_percent", name))
        loaded = second.get(("sagemaker_loaded_model_count", name))
        lookups = second.get(("sagemaker_model_cache_lookups_total", name), 0.0)
        hits = second.get(("sagemaker_model_cache_hits_total", name), 0.0)
        models = (
            "-" if loaded is None else f"{loaded:.0f}" + (f" ({100 * hits / lookups:.0f})" if lookups else "")
        )
        rows.append(
            (
                name,
                state[:40],
                f"{delta('sagemaker_invocations_total', name) / interval:.1f}",
                f"{errors / interval:.1f}",
                f"{total / count * 1000:.2f}" if count else "-",
                f"{cpu:.1f}" if cpu is not None else "-",
                f"{memory:.1f}" if memory is not None else "-",
                models,
            )
        )
    return _table(rows) + warnings(url, with_endpoint=False)
