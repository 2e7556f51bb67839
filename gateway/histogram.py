"""Latency histograms on the hot path, rendered by gateway.metrics at scrape time. Shared by the request
metrics and the multi-model store's.

An observation is one list append; the values are sorted into buckets in batches (`FOLD` of them, or when
the histogram is read), a sort and one bisection per bucket, which costs a request far less than a
bisection of its own (D55). No locks: one event loop.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

# From 50 us (a gateway's overhead) to 60 s (SageMaker's invocation timeout).
BUCKETS: Final = (
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


FOLD: Final = 1024  # observations kept before they are sorted into buckets


class Histogram:
    __slots__ = ("_counts", "_pending", "_total")

    def __init__(self) -> None:
        self._counts = [0] * (len(BUCKETS) + 1)
        self._total = 0.0
        self._pending: list[float] = []

    def observe(self, seconds: float) -> None:
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= FOLD:
            self._fold()

    def _fold(self) -> None:
        """Sort the pending observations into the buckets: a value goes to the first bound it does not pass
        (Prometheus' `le`)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        pending.sort()
        counts = self._counts
        start = 0
        for index, bound in enumerate(BUCKETS):
            end = bisect.bisect_right(pending, bound, start)
            counts[index] += end - start
            start = end
        counts[-1] += len(pending) - start
        self._total += sum(pending)

    @property
    def counts(self) -> list[int]:
        """Observations per bucket (the last: past every bound), not cumulative."""
        self._fold()
        return self._counts

    @property
    def total(self) -> float:
        self._fold()
        return self._total

    @staticmethod
    def sum(histograms: Sequence[Histogram]) -> Histogram:
        total = Histogram()
        for histogram in histograms:
            total._counts = [a + b for a, b in zip(total._counts, histogram.counts, strict=True)]
            total._total += histogram.total
        return total

    def family_buckets(self) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets
