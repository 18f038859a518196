"""The metrics every report shows, and the small helpers the table and the targets share:
a run's median of a metric for one system, the best peer on a metric, numbers as printed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BASE = "pynenc"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    chart: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("enqueue_single_per_s", "enqueue, single calls", "tasks/s", True),
    Metric("enqueue_batch_per_s", "enqueue, batch API", "tasks/s", True),
    Metric("throughput_per_s", "end-to-end throughput", "tasks/s", True),
    Metric("drain_per_s", "drain rate (first to last task)", "tasks/s", True, chart=False),
    Metric("latency_p50_ms", "round trip p50", "ms", False),
    Metric("latency_p99_ms", "round trip p99", "ms", False),
    Metric("dispatch_p50_ms", "enqueue to task record p50", "ms", False, chart=False),
    Metric("fanout_parents_per_s", "fan-out/fan-in parents", "parents/s", True),
    Metric("redis_cpu_us_per_task", "Redis CPU per drained task", "µs", False, chart=False),
    Metric("worker_cpu_us_per_task", "workers' CPU per drained task", "µs", False, chart=False),
    Metric("client_cpu_us_per_task", "client CPU per drained task", "µs", False, chart=False),
    Metric("idle_cpu_percent", "idle pool CPU", "% of a core", False),
    Metric("pss_per_worker_mb", "PSS per worker", "MiB", False),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


def fmt_number(value: float) -> str:
    """Three significant figures, thousands separated; plain and locale-free."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def median_of(system: dict[str, Any], key: str) -> float | None:
    summary = system.get("metrics", {}).get(key)
    return None if summary is None else float(summary["median"])


def best_peer(systems: dict[str, dict[str, Any]], metric: Metric, base: str = BASE) -> tuple[str, float] | None:
    """The peer with the best median for a metric (None when no peer has one)."""
    found = [(name, v) for name, s in systems.items() if name != base and (v := median_of(s, metric.key)) is not None]
    if not found:
        return None
    pick = max if metric.higher_is_better else min
    return pick(found, key=lambda item: item[1])
