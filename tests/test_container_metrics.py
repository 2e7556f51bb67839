"""A container's own Prometheus metrics on mce's /metrics (MetricsConfig.EnableDetailedObservability and
ContainerMetricsConfig, botocore 1.44): scraped from the container when mce is scraped, each sample labelled
with its endpoint, variant and container, beside the gateway's own series. The containers are the example
echo containers (examples/containers/contract.py), which count their invocations at GET /metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from conftest import Processes, container_doc, endpoint_doc, invoke, runtime_client
from prometheus_client.parser import text_string_to_metric_families
from test_local_sagemaker import ROLE, LocalSageMaker


def scrape(url: str) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """mce's /metrics: the text, and each sample by name."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return text, samples


def create(sm: Any, name: str, variants: list[tuple[str, dict[str, Any]]], **config: Any) -> None:
    production = []
    for variant, container in variants:
        model = f"{name}-{variant}"
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer=container)
        production.append({"VariantName": variant, "ModelName": model, "InitialVariantWeight": 1.0})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=production, **config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def test_each_containers_own_metrics_are_on_mces_metrics_with_its_labels(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm, runtime = local.sagemaker(), local.runtime()
        # EnableDetailedObservability is on unless a configuration says otherwise (botocore's documentation)
        create(sm, "observed", [("blue", {"Image": "test/echo:1"}), ("green", {"Image": "test/french:1"})])
        create(
            sm,
            "quiet",
            [("AllTraffic", {"Image": "test/echo:1"})],
            MetricsConfig={"EnableDetailedObservability": False},
        )
        elsewhere = {
            "Image": "test/echo:1",
            "ContainerMetricsConfig": {"MetricsEndpoints": [{"MetricsEndpointPath": "/stats"}]},
        }
        create(sm, "elsewhere", [("AllTraffic", elsewhere)])
        for _ in range(3):
            runtime.invoke_endpoint(EndpointName="observed", TargetVariant="blue", Body=b"{}")
        runtime.invoke_endpoint(EndpointName="observed", TargetVariant="green", Body=b"{}")
        try:
            runtime.invoke_endpoint(EndpointName="observed", TargetVariant="blue", Body=b"not json")
        except ClientError:
            pass  # the container answers 400: its own metrics count it
        runtime.invoke_endpoint(EndpointName="quiet", Body=b"{}")

        text, samples = scrape(local.url)
        assert text.count("# TYPE example_invocations_total counter") == 1  # one family, both containers
        counted = {
            (labels["endpoint"], labels["variant"], labels["exported_container"], labels["outcome"]): value
            for labels, value in samples["example_invocations_total"]
        }
        assert counted == {
            ("observed", "blue", "echo", "ok"): 3.0,
            ("observed", "blue", "echo", "bad_request"): 1.0,
            ("observed", "green", "french", "ok"): 1.0,
            ("observed", "green", "french", "bad_request"): 0.0,
        }
        for labels, _ in samples["example_invocations_total"]:
            assert labels["container"], labels  # mce's name for the container, beside the container's own
        up = {
            (labels["endpoint"], labels["variant"]): value
            for labels, value in samples["mce_container_metrics_up"]
        }
        assert up == {("observed", "blue"): 1.0, ("observed", "green"): 1.0, ("elsewhere", "AllTraffic"): 0.0}
        # and the gateway's own series are still there, for the same endpoints
        assert any(labels["endpoint"] == "observed" for labels, _ in samples["sagemaker_invocations_total"])


def test_a_metrics_path_outside_the_api_pattern_is_refused(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm = local.sagemaker()
        try:
            sm.create_model(
                ModelName="bad-path",
                ExecutionRoleArn=ROLE,
                PrimaryContainer={
                    "Image": "test/echo:1",
                    "ContainerMetricsConfig": {"MetricsEndpoints": [{"MetricsEndpointPath": "/../secret"}]},
                },
            )
        except ClientError as refused:
            error = refused.response["Error"]
            assert error["Code"] == "ValidationException" and "metricsEndpointPath" in error["Message"], error
        else:
            raise AssertionError("CreateModel took a MetricsEndpointPath with '..'")


def test_mce_serve_scrapes_the_containers_its_document_configures(procs: Processes) -> None:
    counted = procs.container("counted")
    silent = procs.container("silent")
    metrics = {"ContainerMetricsConfig": {"MetricsEndpoints": [{"MetricsEndpointPath": "/stats"}]}}
    document = endpoint_doc(
        "Direct",
        [{**container_doc("counted", counted.url), **metrics}, container_doc("silent", silent.url)],
    )
    gateway = procs.gateway(document)
    runtime = runtime_client(gateway.url)
    try:
        for _ in range(2):
            invoke(runtime, "counted")
    finally:
        runtime.close()
    _, samples = scrape(gateway.url)
    assert [(labels["container"], value) for labels, value in samples["contract_posts_total"]] == [
        ("counted", 2.0)
    ]
    up = {labels["container"]: value for labels, value in samples["mce_container_metrics_up"]}
    assert up == {"counted": 1.0}  # a container without ContainerMetricsConfig is not scraped
