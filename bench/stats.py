"""Statistics used by the report: percentiles and median/min/max over repeats.

Plain functions on lists of floats, with no third-party dependency, so that
their definitions are visible here and tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.registry import BenchError


class StatsError(BenchError):
    """Statistics were asked of no data or with an invalid parameter."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks.

    Rank ``(n - 1) * q / 100`` of the sorted values (the "linear" method of
    numpy and of the R type 7 estimator): p0 is the minimum, p100 the maximum,
    p50 the median.
    """
    if not values:
        raise StatsError("percentile of no values")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise StatsError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    fraction = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Summary:
    """Median, minimum and maximum of one measure over the repeats of a scenario."""

    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def summarize(values: Sequence[float]) -> Summary:
    """Summary of the repeats; NaN or infinite values are a bug upstream, refused."""
    if not values:
        raise StatsError("summary of no values")
    if any(not math.isfinite(v) for v in values):
        raise StatsError(f"summary of non-finite values: {list(values)}")
    return Summary(median=median(values), min=float(min(values)), max=float(max(values)), n=len(values))


def rate(count: int, seconds: float) -> float:
    """Operations per second; a zero or negative duration is refused (clock bug)."""
    if seconds <= 0:
        raise StatsError(f"rate over a non-positive duration ({seconds}s)")
    return count / seconds
