"""Per-container metrics as SageMaker names them, in Prometheus' text format at `GET /metrics`.

The hot path only adds to plain counters and histogram buckets (one event loop, no locks); prometheus_client
renders them at scrape time through a custom collector, so the exposition format is the library's.
Labels are bounded: endpoint, variant, container (the configured names), never a path or a client value.

CloudWatch name (spec §2.3, §1.3)   Prometheus name                                  labels
Invocations                         sagemaker_invocations_total                      endpoint, variant[, container]
Invocation4XXErrors                 sagemaker_invocation_4xx_errors_total            endpoint, variant[, container]
Invocation5XXErrors                 sagemaker_invocation_5xx_errors_total            endpoint, variant[, container]
InvocationModelErrors               sagemaker_invocation_model_errors_total          endpoint, variant
ModelLatency (us)                   sagemaker_model_latency_seconds (histogram)      endpoint, variant
ContainerLatency (us)               sagemaker_container_latency_seconds (histogram)  endpoint, variant, container
OverheadLatency (us)                sagemaker_overhead_latency_seconds (histogram)   endpoint, variant[, container]
CPUUtilization (%, up to 100 x cores)  sagemaker_cpu_utilization_percent            endpoint, variant, container
MemoryUtilization (%)               sagemaker_memory_utilization_percent             endpoint, variant, container
(gateway) access denials            mce_access_denials_total                         endpoint, reason

MultiModel containers (spec §4.4), per container:
ModelLoadingWaitTime (us)           sagemaker_model_loading_wait_seconds (histogram) endpoint, variant, container
ModelDownloadingTime (us)           sagemaker_model_downloading_seconds (histogram)  endpoint, variant, container
ModelLoadingTime (us)               sagemaker_model_loading_seconds (histogram)      endpoint, variant, container
ModelUnloadingTime (us)             sagemaker_model_unloading_seconds (histogram)    endpoint, variant, container
ModelCacheHit (average = ratio)     sagemaker_model_cache_hits_total / sagemaker_model_cache_lookups_total
LoadedModelCount                    sagemaker_loaded_model_count                     endpoint, variant, container
(gateway) unloads by reason         mce_model_unloads_total                          endpoint, variant, container, reason

Latencies are in seconds, Prometheus' base unit (CloudWatch's microseconds = seconds x 1e6). A container's
4XX/5XX errors count its answers with that status; a container that could not be talked to (timeout,
refused, reset) counts as 5XX and as a model error, as SageMaker's InvocationModelErrors does. ModelLatency
is the time spent in containers (all hops of a pipeline); OverheadLatency the rest, per request and, split
by hop, per container: the time before a container was called, plus after the last one answered.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.launch.process import group_usage

if TYPE_CHECKING:
    from gateway.multimodel.store import ModelStats

# From 50 us (a gateway's overhead) to 60 s (SageMaker's invocation timeout).
BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


_bucket = bisect.bisect_left


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[_bucket(BUCKETS, seconds)] += 1
        self.total += seconds

    @staticmethod
    def sum(histograms: Sequence[Histogram]) -> Histogram:
        total = Histogram()
        for histogram in histograms:
            total.counts = [a + b for a, b in zip(total.counts, histogram.counts)]
            total.total += histogram.total
        return total

    def family_buckets(self) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for bound, count in zip((*BUCKETS, float("inf")), self.counts):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets


class ContainerStats:
    __slots__ = ("errors_4xx", "errors_5xx", "invocations", "latency", "overhead")

    def __init__(self) -> None:
        self.invocations = 0
        self.errors_4xx = 0
        self.errors_5xx = 0
        self.latency = Histogram()
        self.overhead = Histogram()


class Metrics:
    """The endpoint's numbers. `record` is called once per answered invocation."""

    def __init__(self, endpoint: str, variant: str, containers: Sequence[str], *, single_hop: bool = False) -> None:
        """`single_hop`: every invocation calls one container (Direct mode, or one container): the endpoint's
        ModelLatency and OverheadLatency are then the sums of the containers', added up at scrape time
        instead of per request."""
        self.single_hop = single_hop
        self.endpoint = endpoint
        self.variant = variant
        self.names = list(containers)
        self.containers = [ContainerStats() for _ in containers]
        self._by_name = dict(zip(self.names, self.containers))
        self.invocations = 0
        self.errors_4xx = 0
        self.errors_5xx = 0
        self.model_errors = 0
        self.model_latency = Histogram()
        self.overhead = Histogram()
        self.denials: Callable[[], dict[str, int]] | None = None  # reason -> count, from gateway.access
        self.process_groups: dict[str, Callable[[], int | None]] = {}  # container -> its process group, if launched
        self.models: dict[str, ModelStats] = {}  # MultiModel container -> its model store's numbers
        self._cpu_seen: dict[str, tuple[float, float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def record(self, route: Sequence[str], marks: Sequence[float], end: float, failed_status: int | None) -> None:
        """One invocation: `route` the containers' names, `marks` = [start, sent0, done0, sent1, done1, ...].

        `failed_status` is None when it succeeded, else the failing container's HTTP status (0: no answer);
        the failing container is the last one in `marks`.
        """
        self.invocations += 1
        hops = (len(marks) - 1) // 2
        if hops == 1:  # Direct mode, the common case
            stats = self._by_name[route[0]]
            spent = marks[2] - marks[1]
            stats.invocations += 1
            stats.latency.observe(spent)
            overhead = end - marks[0] - spent
            stats.overhead.observe(overhead)
            if not self.single_hop:
                self.model_latency.observe(spent)
                self.overhead.observe(overhead)
        else:
            in_containers = 0.0
            previous = marks[0]
            for hop in range(hops):
                stats = self._by_name[route[hop]]
                sent, done = marks[1 + 2 * hop], marks[2 + 2 * hop]
                spent = done - sent
                in_containers += spent
                stats.invocations += 1
                stats.latency.observe(spent)
                waited = sent - previous
                if hop == hops - 1:
                    waited += end - done
                stats.overhead.observe(max(waited, 0.0))
                previous = done
            self.model_latency.observe(in_containers)
            self.overhead.observe(max(end - marks[0] - in_containers, 0.0))
        if failed_status is not None and hops:
            stats = self._by_name[route[hops - 1]]
            self.model_errors += 1
            if 400 <= failed_status < 500:
                stats.errors_4xx += 1
                self.errors_4xx += 1
            else:
                stats.errors_5xx += 1
                self.errors_5xx += 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def utilization(self, container: str) -> tuple[float, float] | None:
        """(CPU %, memory %) of a launched container's process group since the last scrape, or None."""
        group = self.process_groups.get(container)
        pgid = group() if group is not None else None
        if pgid is None:
            return None
        cpu_seconds, rss = group_usage(pgid)
        now = time.monotonic()
        last = self._cpu_seen.get(container)
        self._cpu_seen[container] = (now, cpu_seconds)
        cpu = 100.0 * (cpu_seconds - last[1]) / (now - last[0]) if last and now > last[0] else 0.0
        return max(cpu, 0.0), 100.0 * rss / _memory_total()


def _memory_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 1


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        m = self.metrics
        base = [m.endpoint, m.variant]
        per = ["endpoint", "variant", "container"]
        for name, doc, total, attribute in (
            ("sagemaker_invocations", "InvokeEndpoint requests (CloudWatch Invocations)", m.invocations, "invocations"),
            ("sagemaker_invocation_4xx_errors", "4xx answers from containers (Invocation4XXErrors)", m.errors_4xx, "errors_4xx"),
            ("sagemaker_invocation_5xx_errors", "5xx or no answer from containers (Invocation5XXErrors)", m.errors_5xx, "errors_5xx"),
        ):
            family = CounterMetricFamily(name, doc, labels=["endpoint", "variant", "container"])
            family.add_metric([*base, ""], total)
            for container, stats in zip(m.names, m.containers):
                family.add_metric([*base, container], getattr(stats, attribute))
            yield family
        errors = CounterMetricFamily("sagemaker_invocation_model_errors", "non-2xx or failed container calls (InvocationModelErrors)",
                                     labels=["endpoint", "variant"])
        errors.add_metric(base, m.model_errors)
        yield errors
        model_latency, overhead_latency = m.model_latency, m.overhead
        if m.single_hop:
            model_latency = Histogram.sum([c.latency for c in m.containers])
            overhead_latency = Histogram.sum([c.overhead for c in m.containers])
        model = HistogramMetricFamily("sagemaker_model_latency_seconds", "time in containers (ModelLatency)", labels=["endpoint", "variant"])
        model.add_metric(base, model_latency.family_buckets(), model_latency.total)
        yield model
        container_latency = HistogramMetricFamily("sagemaker_container_latency_seconds", "time in one container (ContainerLatency)", labels=per)
        overhead = HistogramMetricFamily("sagemaker_overhead_latency_seconds", "time in the gateway (OverheadLatency)", labels=per)
        overhead.add_metric([*base, ""], overhead_latency.family_buckets(), overhead_latency.total)
        for container, stats in zip(m.names, m.containers):
            container_latency.add_metric([*base, container], stats.latency.family_buckets(), stats.latency.total)
            overhead.add_metric([*base, container], stats.overhead.family_buckets(), stats.overhead.total)
        yield container_latency
        yield overhead
        cpu = GaugeMetricFamily("sagemaker_cpu_utilization_percent", "CPU of a launched container, 100 per core (CPUUtilization)", labels=per)
        memory = GaugeMetricFamily("sagemaker_memory_utilization_percent", "memory of a launched container (MemoryUtilization)", labels=per)
        for container in m.names:
            found = m.utilization(container)
            if found is not None:
                cpu.add_metric([*base, container], found[0])
                memory.add_metric([*base, container], found[1])
        yield cpu
        yield memory
        if m.models:
            yield from _model_families(m)
        if m.denials is not None:
            denials = CounterMetricFamily("mce_access_denials", "requests refused by --access", labels=["endpoint", "reason"])
            for reason, count in sorted(m.denials().items()):
                denials.add_metric([m.endpoint, reason], count)
            yield denials


def _model_families(m: Metrics) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
    per = ["endpoint", "variant", "container"]
    for name, doc, attribute in (
        ("sagemaker_model_loading_wait_seconds", "a request waiting for its model to load (ModelLoadingWaitTime)", "loading_wait"),
        ("sagemaker_model_downloading_seconds", "downloading a model's artifact (ModelDownloadingTime)", "downloading"),
        ("sagemaker_model_loading_seconds", "the container loading a model (ModelLoadingTime)", "loading"),
        ("sagemaker_model_unloading_seconds", "the container unloading a model (ModelUnloadingTime)", "unloading"),
    ):
        family = HistogramMetricFamily(name, doc, labels=per)
        for container, stats in m.models.items():
            histogram: Histogram = getattr(stats, attribute)
            family.add_metric([m.endpoint, m.variant, container], histogram.family_buckets(), histogram.total)
        yield family
    hits = CounterMetricFamily("sagemaker_model_cache_hits", "requests whose model was loaded (ModelCacheHit)", labels=per)
    lookups = CounterMetricFamily("sagemaker_model_cache_lookups", "requests to a MultiModel container", labels=per)
    loaded = GaugeMetricFamily("sagemaker_loaded_model_count", "models loaded in the container (LoadedModelCount)", labels=per)
    unloads = CounterMetricFamily("mce_model_unloads", "models unloaded, by reason", labels=[*per, "reason"])
    for container, stats in m.models.items():
        labels = [m.endpoint, m.variant, container]
        hits.add_metric(labels, stats.hits)
        lookups.add_metric(labels, stats.lookups)
        loaded.add_metric(labels, stats.loaded)
        for reason, count in sorted(stats.unloads.items()):
            unloads.add_metric([*labels, reason.value], count)
    yield from (hits, lookups, loaded, unloads)
