"""`mce status URL`: each container of a running endpoint at a glance, from its /ping and two /metrics
scrapes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

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


def _metrics(url: str) -> bytes:
    """GET /metrics; signed with the caller's AWS credentials when the gateway asks for it (`--access`)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            if error.code != 403:
                raise
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
    request = AWSRequest(method="GET", url=url)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    SigV4Auth(credentials, "sagemaker", region).add_auth(request)
    signed = urllib.request.Request(url, headers=dict(request.headers.items()))
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
