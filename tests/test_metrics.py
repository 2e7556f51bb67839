"""Metrics, Server-Timing, trace context and the access log, after known sequences of real invocations."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from conftest import ROOT, Processes, container_doc, endpoint_doc, invoke, scrape, wait_until
from prometheus_client.parser import text_string_to_metric_families


def test_counts_and_latency_split_in_direct_mode(procs: Processes, clients: Any) -> None:
    alpha, beta = procs.container("alpha"), procs.container("beta")
    gateway = procs.gateway(
        endpoint_doc(
            "Direct",
            [
                container_doc("alpha", alpha.url),
                container_doc("beta", beta.url, InvocationTimeoutInSeconds=1),
            ],
        )
    )
    client = clients(gateway.url)
    for _ in range(3):
        invoke(client, "alpha", {})
    invoke(client, "beta", {})
    for target, fault in (("alpha", {"status": 400}), ("beta", {"status": 503}), ("beta", {"hang": True})):
        with pytest.raises(client.exceptions.ModelError):
            invoke(client, target, {"faults": {target: fault}})
    with pytest.raises(client.exceptions.ValidationError):  # an invocation answered 400 by the gateway itself
        invoke(client, "gamma", {})
    m = scrape(gateway.url)
    assert m[("sagemaker_invocations_total", "")] == 8
    assert (
        m[("sagemaker_invocations_total", "alpha")] == 4 and m[("sagemaker_invocations_total", "beta")] == 3
    )
    assert m[("sagemaker_invocation_4xx_errors_total", "alpha")] == 1
    assert m[("sagemaker_invocation_5xx_errors_total", "beta")] == 2  # a 503 and a timeout
    # every 4xx the client got is counted: the ValidationError too (it used to count as no error at all)
    assert (
        m[("sagemaker_invocation_4xx_errors_total", "")] == 2
        and m[("sagemaker_invocation_5xx_errors_total", "")] == 2
    )
    assert m[("sagemaker_invocation_model_errors_total", "")] == 3
    assert m[("sagemaker_container_latency_seconds_count", "alpha")] == 4
    assert m[("sagemaker_container_latency_seconds_count", "beta")] == 3
    assert m[("sagemaker_model_latency_seconds_count", "")] == 7
    assert m[("sagemaker_overhead_latency_seconds_count", "")] == 7
    # the second the hung call waited is the container's, not the gateway's
    assert m[("sagemaker_container_latency_seconds_sum", "beta")] >= 1.0
    assert (
        m[("sagemaker_overhead_latency_seconds_sum", "")]
        < m[("sagemaker_container_latency_seconds_sum", "beta")]
    )
    # in Direct mode a container's overhead is the request's overhead
    per_container = (
        m[("sagemaker_overhead_latency_seconds_sum", "alpha")]
        + m[("sagemaker_overhead_latency_seconds_sum", "beta")]
    )
    assert per_container == pytest.approx(m[("sagemaker_overhead_latency_seconds_sum", "")], rel=1e-6)


def test_serial_split_per_hop_and_server_timing(procs: Processes, clients: Any) -> None:
    names = ("first", "second", "third")
    gateway = procs.gateway(endpoint_doc("Serial", [container_doc(n, procs.container(n).url) for n in names]))
    client = clients(gateway.url)
    response = invoke(client, None, {})
    timing = response["ResponseMetadata"]["HTTPHeaders"]["server-timing"]
    entries = [part.strip() for part in timing.split(",")]
    assert [e.split(";")[1] for e in entries[:3]] == [f'desc="{n}"' for n in names]
    assert entries[3].startswith("gateway;dur=")
    # milliseconds to the microsecond, as the header has always had them (formatted from whole microseconds)
    assert all(re.fullmatch(r".*;dur=\d+\.\d{3}", entry) for entry in entries), entries
    m = scrape(gateway.url)
    assert all(m[("sagemaker_invocations_total", n)] == 1 for n in names)
    assert m[("sagemaker_model_latency_seconds_sum", "")] == pytest.approx(
        sum(m[("sagemaker_container_latency_seconds_sum", n)] for n in names), rel=1e-6
    )
    assert sum(m[("sagemaker_overhead_latency_seconds_sum", n)] for n in names) == pytest.approx(
        m[("sagemaker_overhead_latency_seconds_sum", "")], rel=1e-6
    )


def test_trace_context_reaches_the_containers(procs: Processes, clients: Any) -> None:
    echo = procs.container("echo")
    gateway = procs.gateway(endpoint_doc("Direct", [container_doc("echo", echo.url)]))
    ours = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    request = urllib.request.Request(
        gateway.url + "/invocations",
        data=b"{}",
        headers={
            "traceparent": ours,
            "X-Amzn-SageMaker-Target-Container-Hostname": "echo",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["seen"]["echo"]["headers"]["traceparent"] == ours
    client = clients(gateway.url)
    generated = json.loads(invoke(client, "echo", {})["Body"])["seen"]["echo"]["headers"]["traceparent"]
    version, trace, span, flags = generated.split("-")
    assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
    int(trace, 16), int(span, 16)


def test_access_log_lines(procs: Processes, clients: Any) -> None:
    echo = procs.container("echo")
    gateway = procs.gateway(endpoint_doc("Direct", [container_doc("echo", echo.url)]), "--access-log")
    client = clients(gateway.url)
    answer = invoke(client, "echo", {}, InferenceId="inf-42")
    rid = answer["ResponseMetadata"]["RequestId"]
    log = procs.tmp / "gateway.log"
    wait_until(lambda: rid in log.read_text(), "the access log line", timeout=10)
    line = next(text for text in log.read_text().splitlines() if rid in text)
    entry = json.loads(line[line.index("{") :])
    assert entry["inference_id"] == "inf-42" and entry["containers"] == ["echo"] and entry["status"] == 200
    assert len(entry["container_ms"]) == 1 and entry["total_ms"] >= entry["container_ms"][0]


def test_no_metrics(procs: Processes, clients: Any) -> None:
    echo = procs.container("echo")
    gateway = procs.gateway(endpoint_doc("Direct", [container_doc("echo", echo.url)]), "--no-metrics")
    client = clients(gateway.url)
    answer = invoke(client, "echo", {})
    assert "server-timing" not in answer["ResponseMetadata"]["HTTPHeaders"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gateway.url + "/metrics", timeout=10)
    caught.value.close()
    assert caught.value.code == 404


def test_utilization_of_launched_containers_and_mce_status(tmp_path: Any, clients: Any) -> None:
    from test_up import Up

    run = Up(ROOT / "examples" / "echo-direct.yaml", tmp_path / "run")
    try:
        url = run.url()
        client = clients(url)
        client.invoke_endpoint(EndpointName="echo-direct", TargetContainerHostname="english", Body=b"{}")[
            "Body"
        ].read()
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            samples = {
                (s.name, s.labels.get("container")): s.value
                for f in text_string_to_metric_families(response.read().decode())
                for s in f.samples
            }
        for name in ("english", "french"):
            assert samples[("sagemaker_memory_utilization_percent", name)] > 0
            assert ("sagemaker_cpu_utilization_percent", name) in samples
        status = subprocess.run(
            [sys.executable, "-m", "gateway", "status", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].split()[:2] == ["container", "health"]
        assert any(line.startswith("english") and "Healthy" in line for line in lines)
    finally:
        run.stop()
        run.kill()


def test_histogram_batches_count_as_each_observation_would() -> None:
    """Observations are sorted into buckets in batches (D55): on every bound, just past it, past the last,
    across more than one batch and read mid-batch, each lands where Prometheus' `le` puts it."""
    from gateway.histogram import BUCKETS, FOLD, Histogram

    values = [v for bound in BUCKETS for v in (bound, bound * 1.0001, bound * 0.9999)] + [61.0, 0.0]
    values = values * (2 * FOLD // len(values) + 1)
    histogram = Histogram()
    expected = [0] * (len(BUCKETS) + 1)
    for count, value in enumerate(values, 1):
        histogram.observe(value)
        expected[next((i for i, bound in enumerate(BUCKETS) if value <= bound), len(BUCKETS))] += 1
        if count == FOLD + 7:  # read between two batches
            assert histogram.counts == expected
    assert len(values) > 2 * FOLD and histogram.counts == expected
    assert histogram.total == pytest.approx(sum(values), rel=1e-12)


def test_server_timing_milliseconds_as_float_formatting_has_them() -> None:
    """Server-Timing's durations are formatted from whole microseconds with a table of decimals (D56): the
    same digits as `%.3f`, but for a value exactly half a microsecond away, which rounds up."""
    from gateway.telemetry import milliseconds

    values = [0.0, 5e-7, 0.000999, 0.0009995, 0.001, 0.0123456, 1.0, 59.999999, 3600.0]
    values += [n * 0.000_000_73 for n in range(0, 20_000, 7)]
    for seconds in values:
        ours = milliseconds(seconds)
        assert re.fullmatch(rb"\d+\.\d{3}", ours), ours
        exact = seconds * 1000
        assert abs(float(ours) - exact) <= 0.0005 + 1e-9, (seconds, ours)
        micros = seconds * 1_000_000
        if abs(abs(micros - round(micros)) - 0.5) > 1e-6:  # not a tie: the very digits of %.3f
            assert ours == b"%.3f" % exact, (seconds, ours)


def test_endpoint_names_remembered_are_the_names_parsed() -> None:
    """wire.endpoint_name remembers the paths it has parsed (D56): asked again, it answers the same, and a
    path that names no endpoint is never remembered as one."""
    from gateway import wire

    paths = [
        b"/endpoints/alpha/invocations",
        b"/endpoints/alpha/invocations-response-stream",
        b"/endpoints/beta/async-invocations",
        b"/endpoints/alpha/other",
        b"/endpoints//invocations",
        b"/endpoints/alpha",
        b"/invocations",
        b"/ping",
    ]
    first = [wire.endpoint_name(path) for path in paths]
    assert first == [b"alpha", b"alpha", b"beta", None, b"", None, None, None]
    assert [wire.endpoint_name(path) for path in paths] == first
