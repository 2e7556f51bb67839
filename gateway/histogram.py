"""Latency histograms on the hot path: plain bucket counts, no locks (one event loop), rendered by
gateway.metrics at scrape time. Shared by the request metrics and the multi-model store's."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# From 50 us (a gateway's overhead) to 60 s (SageMaker's invocation timeout).
BUCKETS = (
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


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
            total.counts = [a + b for a, b in zip(total.counts, histogram.counts, strict=True)]
            total.total += histogram.total
        return total

    def family_buckets(self) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets
