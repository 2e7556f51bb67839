"""Per-container metrics as SageMaker names them, in Prometheus' text format at `GET /metrics`.

The hot path only adds to plain counters and histogram buckets (one event loop, no locks); prometheus_client
renders them at scrape time through a custom collector, so the exposition format is the library's.
Labels are bounded: endpoint, variant, container (the configured names), never a path or a client value.

CloudWatch name (spec §2.3, §1.3)  Prometheus name (h: a histogram)          labels
Invocations                        sagemaker_invocations_total                 endpoint, variant[, container]
Invocation4XXErrors                sagemaker_invocation_4xx_errors_total       endpoint, variant[, container]
Invocation5XXErrors                sagemaker_invocation_5xx_errors_total       endpoint, variant[, container]
InvocationModelErrors              sagemaker_invocation_model_errors_total     endpoint, variant
ModelLatency (us)                  sagemaker_model_latency_seconds (h)         endpoint, variant
ContainerLatency (us)              sagemaker_container_latency_seconds (h)     endpoint, variant, container
OverheadLatency (us)               sagemaker_overhead_latency_seconds (h)      endpoint, variant[, container]
CPUUtilization (%, 100 per core)   sagemaker_cpu_utilization_percent           endpoint, variant, container
MemoryUtilization (%)              sagemaker_memory_utilization_percent        endpoint, variant, container
(gateway) access denials           mce_access_denials_total                    endpoint, reason

InvokeEndpointAsync, per endpoint (label endpoint):
ApproximateBacklogSize             sagemaker_approximate_backlog_size
ApproximateAgeOfOldestRequest (s)  sagemaker_approximate_age_of_oldest_request_seconds
ExpiredRequests                    sagemaker_expired_requests_total

MultiModel containers (spec §4.4), per container (labels endpoint, variant, container):
ModelLoadingWaitTime (us)          sagemaker_model_loading_wait_seconds (h)
ModelDownloadingTime (us)          sagemaker_model_downloading_seconds (h)
ModelLoadingTime (us)              sagemaker_model_loading_seconds (h)
ModelUnloadingTime (us)            sagemaker_model_unloading_seconds (h)
ModelCacheHit (average = ratio)    sagemaker_model_cache_hits_total / sagemaker_model_cache_lookups_total
LoadedModelCount                   sagemaker_loaded_model_count
(gateway) unloads by reason        mce_model_unloads_total                     ... and reason

Serverless variants (gateway.serverless), labels endpoint, variant:
(gateway) containers running       mce_serverless_warm
(gateway) invocations running      mce_serverless_concurrent_invocations
(gateway) cold starts              mce_serverless_cold_starts_total
(gateway) refused past MaxConcurrency  mce_serverless_throttled_total

Data capture (gateway.capture), labels endpoint, variant:
(gateway) events, dropped, objects, failed writes  mce_capture_{events,dropped,objects,write_failures}_total

While UpdateEndpoint shifts traffic (gateway.control.shifting), labels endpoint, variant:
(gateway) the new fleet's share    mce_update_new_fleet_share

Each container's own metrics (ContainerMetricsConfig, scraped when /metrics is: `containers_exposition`):
its families as it names them, each sample with endpoint, variant and container added (its own labels of
those names as exported_*), and mce_container_metrics_up (1: it answered Prometheus text).

Latencies are in seconds, Prometheus' base unit (CloudWatch's microseconds = seconds x 1e6). A container's
4XX/5XX errors count its answers with that status; a container that could not be talked to (timeout,
refused, reset) counts as 5XX and as a model error, as SageMaker's InvocationModelErrors does. ModelLatency
is the time spent in containers (all hops of a pipeline); OverheadLatency the rest, per request and, split
by hop, per container: the time before a container was called, plus after the last one answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway.errors import ModelError
from gateway.histogram import BUCKETS, Histogram

if TYPE_CHECKING:
    from gateway.multimodel.store import ModelStats
    from gateway.timeline import Timeline

__all__ = ["BUCKETS", "Histogram", "Metrics", "containers_exposition"]

logger = logging.getLogger(__name__)


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

    def __init__(
        self, endpoint: str, variant: str, containers: Sequence[str], *, single_hop: bool = False
    ) -> None:
        """`single_hop`: every invocation calls one container (Direct mode, or one container): the endpoint's
        ModelLatency and OverheadLatency are then the sums of the containers', added up at scrape time
        instead of per request."""
        self.single_hop = single_hop
        self.endpoint = endpoint
        self.variant = variant
        self.names = list(containers)
        self.containers = [ContainerStats() for _ in containers]
        self._by_name = dict(zip(self.names, self.containers, strict=True))
        self.invocations = 0
        self.errors_4xx = 0
        self.errors_5xx = 0
        self.model_errors = 0
        self.model_latency = Histogram()
        self.overhead = Histogram()
        self.denials: Callable[[], dict[str, int]] | None = None  # reason -> count, from gateway.access
        # launched container -> (CPU seconds so far, resident bytes) of its processes, None once stopped
        self.usage: dict[str, Callable[[], tuple[float, int] | None]] = {}
        self.warnings: dict[str, list[str]] = {}  # launched container -> its warnings (gateway.launch)
        self.models: dict[str, ModelStats] = {}  # MultiModel container -> its model store's numbers
        self.queue: QueueStats | None = None  # the endpoint's InvokeEndpointAsync queue, when it has one
        self.serverless: ServerlessStats | None = None  # a serverless variant's concurrency and cold starts
        self.capture: CaptureStats | None = None  # the variant's data capture, when it has one
        self.new_fleet_share: float | None = None  # while an update shifts traffic to this (new) variant
        # under mce serve --workers: the other workers' expositions of this endpoint (gateway.workers)
        self.siblings: Callable[[], Awaitable[list[bytes]]] | None = None
        # container -> a GET of its own Prometheus metrics (ContainerMetricsConfig): (status, body) or why not
        self.scrapers: dict[str, Callable[[], Awaitable[tuple[int, bytes] | str]]] = {}
        self._cpu_seen: dict[str, tuple[float, float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def record(self, route: Sequence[str], timeline: Timeline) -> None:
        """One answered invocation: `route` the names of the containers it was to run through.

        Counted with the class of the answer the client got: a ModelError by the failing container's own
        status (4XX, else 5XX: no answer at all is 5XX), under that container and the endpoint; any other
        4xx (ValidationError, ModelNotReadyException, an access denial) or 5xx under the endpoint, and under
        the last container sent a request if one was."""
        self.invocations += 1
        hops = timeline.hops
        if hops == 1:  # Direct mode, the common case
            stats = self._by_name[route[0]]
            spent = timeline.spent(0)
            stats.invocations += 1
            stats.latency.observe(spent)
            overhead = timeline.ended - timeline.received - spent
            stats.overhead.observe(overhead)
            if not self.single_hop:
                self.model_latency.observe(spent)
                self.overhead.observe(overhead)
        elif hops:
            in_containers = 0.0
            for hop in range(hops):
                stats = self._by_name[route[hop]]
                spent = timeline.spent(hop)
                in_containers += spent
                stats.invocations += 1
                stats.latency.observe(spent)
                waited = timeline.waited(hop)
                if hop == hops - 1:
                    waited += timeline.after(hop)
                stats.overhead.observe(max(waited, 0.0))
            self.model_latency.observe(in_containers)
            self.overhead.observe(max(timeline.ended - timeline.received - in_containers, 0.0))
        failure = timeline.failure
        if failure is None:
            return
        where = self._by_name[route[hops - 1]] if hops else None
        if isinstance(failure, ModelError):
            self.model_errors += 1
            status = failure.original_status or 0
            where = self._by_name.get(failure.container, where)
        else:
            status = failure.status
        if 400 <= status < 500:
            self.errors_4xx += 1
            if where is not None:
                where.errors_4xx += 1
        else:
            self.errors_5xx += 1
            if where is not None:
                where.errors_5xx += 1

    def exposition(self) -> bytes:
        """This process's numbers."""
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """What GET /metrics shows: this process's numbers, added to its sibling workers' if it has any."""
        own = self.exposition()
        if self.siblings is not None:
            own = merge_expositions([own, *await self.siblings()])
        return own + await containers_exposition([self])

    @staticmethod
    def merged(all_metrics: Sequence[Metrics]) -> bytes:
        """One exposition for many endpoints and variants (the local SageMaker's /metrics): each family
        once, with every endpoint's samples (their labels tell them apart)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(all_metrics))
        return generate_latest(registry)

    def utilization(self, container: str) -> tuple[float, float] | None:
        """(CPU %, memory %) of a launched container's processes since the last scrape, or None."""
        read = self.usage.get(container)
        measured = read() if read is not None else None
        if measured is None:
            return None
        cpu_seconds, rss = measured
        now = time.monotonic()
        last = self._cpu_seen.get(container)
        self._cpu_seen[container] = (now, cpu_seconds)
        cpu = 100.0 * (cpu_seconds - last[1]) / (now - last[0]) if last and now > last[0] else 0.0
        return max(cpu, 0.0), 100.0 * rss / _memory_total()


# Gauges whose sum over workers means nothing: the largest is the endpoint's.
_LARGEST = frozenset({"sagemaker_approximate_age_of_oldest_request_seconds"})


CONTAINER_METRICS_LIMIT = 4 << 20  # bytes of one container's exposition read at most
_OWN_PREFIXES = ("sagemaker_", "mce_")  # our families: a container's of the same name are left out
_TARGET_LABELS = ("endpoint", "variant", "container")


async def containers_exposition(all_metrics: Sequence[Metrics]) -> bytes:
    """Every container's own metrics (those with a ContainerMetricsConfig), scraped now and at once, each
    sample labelled with its endpoint, variant and container (a label of those names the container set
    itself becomes `exported_<name>`, as Prometheus does), a family seen in several containers shown once;
    and mce_container_metrics_up, 1 for each container that answered with Prometheus text."""
    targets = [(m, name, scrape) for m in all_metrics for name, scrape in m.scrapers.items()]
    if not targets:
        return b""
    answers = await asyncio.gather(*(scrape() for _, _, scrape in targets))
    up = GaugeMetricFamily(
        "mce_container_metrics_up",
        "1 when the container's own metrics endpoint (ContainerMetricsConfig) answered Prometheus text",
        labels=list(_TARGET_LABELS),
    )
    families: dict[str, Metric] = {}
    for (metrics, name, _), answer in zip(targets, answers, strict=True):
        parsed = _parsed(metrics, name, answer)
        up.add_metric([metrics.endpoint, metrics.variant, name], 1.0 if parsed is not None else 0.0)
        for family in parsed or ():
            kept = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            if kept.type != family.type:  # two containers disagree on what a name is: the first one's
                continue
            labels = {"endpoint": metrics.endpoint, "variant": metrics.variant, "container": name}
            for sample in family.samples:
                own = {
                    (f"exported_{key}" if key in _TARGET_LABELS else key): value
                    for key, value in sample.labels.items()
                }
                kept.samples.append(sample._replace(labels={**own, **labels}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([up, *families.values()]))
    return generate_latest(registry)


def _parsed(metrics: Metrics, container: str, answer: tuple[int, bytes] | str) -> list[Metric] | None:
    """A container's answer as metric families (ours left out), or None if it is not Prometheus text."""
    where = f"{metrics.endpoint}/{metrics.variant}/{container}"
    if isinstance(answer, str):
        logger.debug("%s: no metrics: %s", where, answer)
        return None
    status, body = answer
    if status != 200:
        logger.debug("%s: its metrics endpoint answered %d", where, status)
        return None
    try:
        families = list(text_string_to_metric_families(body.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        logger.debug("%s: its metrics are not Prometheus text: %s", where, exc)
        return None
    return [family for family in families if not family.name.startswith(_OWN_PREFIXES)]


def merge_expositions(expositions: Sequence[bytes]) -> bytes:
    """Expositions of the same endpoint from several processes (mce serve --workers) as one: each sample
    summed over them (counters, histogram buckets, sums and counts, the backlog), the age of the oldest
    queued request the largest."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for exposition in expositions:
        for family in text_string_to_metric_families(exposition.decode()):
            kept = families.setdefault(family.name, family)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    if kept is not family:
                        kept.samples.append(sample)
                    values[key] = sample.value
                elif family.name in _LARGEST:
                    values[key] = max(values[key], sample.value)
                else:
                    values[key] += sample.value
    for family in families.values():
        family.samples = [
            sample._replace(value=values[(sample.name, tuple(sorted(sample.labels.items())))])
            for sample in family.samples
        ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


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
            (
                "sagemaker_invocations",
                "InvokeEndpoint requests (CloudWatch Invocations)",
                m.invocations,
                "invocations",
            ),
            (
                "sagemaker_invocation_4xx_errors",
                "4xx answers from containers (Invocation4XXErrors)",
                m.errors_4xx,
                "errors_4xx",
            ),
            (
                "sagemaker_invocation_5xx_errors",
                "5xx or no answer from containers (Invocation5XXErrors)",
                m.errors_5xx,
                "errors_5xx",
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["endpoint", "variant", "container"])
            family.add_metric([*base, ""], total)
            for container, stats in zip(m.names, m.containers, strict=True):
                family.add_metric([*base, container], getattr(stats, attribute))
            yield family
        errors = CounterMetricFamily(
            "sagemaker_invocation_model_errors",
            "non-2xx or failed container calls (InvocationModelErrors)",
            labels=["endpoint", "variant"],
        )
        errors.add_metric(base, m.model_errors)
        yield errors
        model_latency, overhead_latency = m.model_latency, m.overhead
        if m.single_hop:
            model_latency = Histogram.sum([c.latency for c in m.containers])
            overhead_latency = Histogram.sum([c.overhead for c in m.containers])
        model = HistogramMetricFamily(
            "sagemaker_model_latency_seconds",
            "time in containers (ModelLatency)",
            labels=["endpoint", "variant"],
        )
        model.add_metric(base, model_latency.family_buckets(), model_latency.total)
        yield model
        container_latency = HistogramMetricFamily(
            "sagemaker_container_latency_seconds", "time in one container (ContainerLatency)", labels=per
        )
        overhead = HistogramMetricFamily(
            "sagemaker_overhead_latency_seconds", "time in the gateway (OverheadLatency)", labels=per
        )
        overhead.add_metric([*base, ""], overhead_latency.family_buckets(), overhead_latency.total)
        for container, stats in zip(m.names, m.containers, strict=True):
            container_latency.add_metric(
                [*base, container], stats.latency.family_buckets(), stats.latency.total
            )
            overhead.add_metric([*base, container], stats.overhead.family_buckets(), stats.overhead.total)
        yield container_latency
        yield overhead
        cpu = GaugeMetricFamily(
            "sagemaker_cpu_utilization_percent",
            "CPU of a launched container, 100 per core (CPUUtilization)",
            labels=per,
        )
        memory = GaugeMetricFamily(
            "sagemaker_memory_utilization_percent",
            "memory of a launched container (MemoryUtilization)",
            labels=per,
        )
        for container in m.names:
            found = m.utilization(container)
            if found is not None:
                cpu.add_metric([*base, container], found[0])
                memory.add_metric([*base, container], found[1])
        yield cpu
        yield memory
        if any(m.warnings.values()):
            warned = GaugeMetricFamily(
                "mce_container_warning",
                "a launched container's warning about how it runs here, as its log has it (1 while it runs)",
                labels=[*per, "warning"],
            )
            for container, warnings in m.warnings.items():
                for warning in warnings:
                    warned.add_metric([*base, container, warning], 1)
            yield warned
        if m.models:
            yield from _model_families(m)
        if m.queue is not None:
            yield from _queue_families(m.endpoint, m.queue)
        if m.serverless is not None:
            yield from _serverless_families(m.endpoint, m.variant, m.serverless)
        if m.capture is not None:
            yield from _counters(
                [m.endpoint, m.variant],
                (
                    (
                        "mce_capture_events",
                        "requests the sample took (DataCaptureConfig)",
                        m.capture.captured,
                    ),
                    (
                        "mce_capture_dropped",
                        "events dropped while S3 would not take the buffer",
                        m.capture.dropped,
                    ),
                    ("mce_capture_objects", "objects written to S3", m.capture.objects),
                    (
                        "mce_capture_write_failures",
                        "objects S3 refused (tried again later)",
                        m.capture.failures,
                    ),
                ),
            )
        if m.new_fleet_share is not None:
            share = GaugeMetricFamily(
                "mce_update_new_fleet_share",
                "while UpdateEndpoint shifts traffic: the share of requests the new fleet gets",
                labels=["endpoint", "variant"],
            )
            share.add_metric([m.endpoint, m.variant], m.new_fleet_share)
            yield share
        if m.denials is not None:
            denials = CounterMetricFamily(
                "mce_access_denials", "requests refused by --access", labels=["endpoint", "reason"]
            )
            for reason, count in sorted(m.denials().items()):
                denials.add_metric([m.endpoint, reason], count)
            yield denials


class QueueStats(Protocol):
    """What an asynchronous queue tells (gateway.async_inference.AsyncQueue)."""

    @property
    def backlog(self) -> int: ...

    @property
    def oldest_age(self) -> float: ...

    expired: int


def _queue_families(endpoint: str, queue: QueueStats) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    backlog = GaugeMetricFamily(
        "sagemaker_approximate_backlog_size",
        "InvokeEndpointAsync requests queued or running (ApproximateBacklogSize)",
        labels=["endpoint"],
    )
    backlog.add_metric([endpoint], queue.backlog)
    age = GaugeMetricFamily(
        "sagemaker_approximate_age_of_oldest_request_seconds",
        "how long the oldest queued request has waited (ApproximateAgeOfOldestRequest)",
        labels=["endpoint"],
    )
    age.add_metric([endpoint], queue.oldest_age)
    expired = CounterMetricFamily(
        "sagemaker_expired_requests",
        "requests whose RequestTTLSeconds passed in the queue (ExpiredRequests)",
        labels=["endpoint"],
    )
    expired.add_metric([endpoint], queue.expired)
    yield backlog
    yield age
    yield expired


class ServerlessStats(Protocol):
    """What a serverless variant tells (gateway.serverless.Serverless)."""

    warm: bool
    in_flight: int
    cold_starts: int
    throttled: int


class CaptureStats(Protocol):
    """What a variant's data capture tells (gateway.capture.Capture)."""

    captured: int
    dropped: int
    objects: int
    failures: int


def _counters(values: list[str], counters: Sequence[tuple[str, str, int]]) -> Iterator[CounterMetricFamily]:
    """Counters labelled endpoint and variant."""
    for name, documentation, value in counters:
        family = CounterMetricFamily(name, documentation, labels=["endpoint", "variant"])
        family.add_metric(values, float(value))
        yield family


def _serverless_families(
    endpoint: str, variant: str, stats: ServerlessStats
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    labels = ["endpoint", "variant"]
    for name, documentation, value in (
        ("mce_serverless_warm", "1 while the serverless variant's containers run", stats.warm),
        (
            "mce_serverless_concurrent_invocations",
            "invocations running on the serverless variant",
            stats.in_flight,
        ),
    ):
        gauge = GaugeMetricFamily(name, documentation, labels=labels)
        gauge.add_metric([endpoint, variant], float(value))
        yield gauge
    yield from _counters(
        [endpoint, variant],
        (
            (
                "mce_serverless_cold_starts",
                "invocations that waited for the containers to start",
                stats.cold_starts,
            ),
            (
                "mce_serverless_throttled",
                "invocations refused past MaxConcurrency (ThrottlingException)",
                stats.throttled,
            ),
        ),
    )


class _Merged(Collector):
    def __init__(self, all_metrics: Sequence[Metrics]) -> None:
        self.all_metrics = all_metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily] = {}
        for metrics in self.all_metrics:
            for family in _Collector(metrics).collect():
                found = families.get(family.name)
                if found is None:
                    families[family.name] = family
                else:
                    found.samples.extend(family.samples)
        yield from families.values()


def _model_families(m: Metrics) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
    per = ["endpoint", "variant", "container"]
    for name, doc, attribute in (
        (
            "sagemaker_model_loading_wait_seconds",
            "a request waiting for its model to load (ModelLoadingWaitTime)",
            "loading_wait",
        ),
        (
            "sagemaker_model_downloading_seconds",
            "downloading a model's artifact (ModelDownloadingTime)",
            "downloading",
        ),
        ("sagemaker_model_loading_seconds", "the container loading a model (ModelLoadingTime)", "loading"),
        (
            "sagemaker_model_unloading_seconds",
            "the container unloading a model (ModelUnloadingTime)",
            "unloading",
        ),
    ):
        family = HistogramMetricFamily(name, doc, labels=per)
        for container, stats in m.models.items():
            histogram: Histogram = getattr(stats, attribute)
            family.add_metric([m.endpoint, m.variant, container], histogram.family_buckets(), histogram.total)
        yield family
    hits = CounterMetricFamily(
        "sagemaker_model_cache_hits", "requests whose model was loaded (ModelCacheHit)", labels=per
    )
    lookups = CounterMetricFamily(
        "sagemaker_model_cache_lookups", "requests to a MultiModel container", labels=per
    )
    loaded = GaugeMetricFamily(
        "sagemaker_loaded_model_count", "models loaded in the container (LoadedModelCount)", labels=per
    )
    unloads = CounterMetricFamily("mce_model_unloads", "models unloaded, by reason", labels=[*per, "reason"])
    for container, stats in m.models.items():
        labels = [m.endpoint, m.variant, container]
        hits.add_metric(labels, stats.hits)
        lookups.add_metric(labels, stats.lookups)
        loaded.add_metric(labels, stats.loaded)
        for reason, count in sorted(stats.unloads.items()):
            unloads.add_metric([*labels, reason.value], count)
    yield from (hits, lookups, loaded, unloads)
