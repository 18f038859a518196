"""The benchmark harness's arithmetic: percentiles, summaries, rates, CPU accounting, round order."""

from __future__ import annotations

import math

import pytest

from bench import processes, registry, scenarios, stats


def test_percentile_endpoints_are_min_and_max() -> None:
    values = [7.0, 1.0, 3.0, 9.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 9.0


def test_percentile_interpolates_linearly_between_ranks() -> None:
    # Sorted 10, 20, 30, 40: rank of p50 is 1.5 -> 25; rank of p90 is 2.7 -> 37.
    values = [40.0, 10.0, 30.0, 20.0]
    assert stats.percentile(values, 50) == pytest.approx(25.0)
    assert stats.percentile(values, 90) == pytest.approx(37.0)


def test_percentile_p99_of_one_to_hundred() -> None:
    values = [float(v) for v in range(1, 101)]
    # rank 0.99 * 99 = 98.01 -> 99 + 0.01 * (100 - 99)
    assert stats.percentile(values, 99) == pytest.approx(99.01)


def test_median_odd_and_even_counts() -> None:
    assert stats.median([5.0, 1.0, 3.0]) == 3.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)
    assert stats.median([42.0]) == 42.0


def test_percentile_does_not_reorder_its_input() -> None:
    values = [3.0, 1.0, 2.0]
    stats.percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@pytest.mark.parametrize("q", [-1.0, 100.5, math.nan])
def test_percentile_rejects_out_of_range_q(q: float) -> None:
    with pytest.raises(stats.StatsError, match="within 0..100"):
        stats.percentile([1.0, 2.0], q)


def test_percentile_and_summary_reject_no_data() -> None:
    with pytest.raises(stats.StatsError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(stats.StatsError, match="no values"):
        stats.summarize([])


def test_summary_reports_median_min_max_and_count() -> None:
    summary = stats.summarize([300.0, 100.0, 200.0])
    assert summary == stats.Summary(median=200.0, min=100.0, max=300.0, n=3)
    assert summary.as_dict() == {"median": 200.0, "min": 100.0, "max": 300.0, "n": 3}


def test_summary_rejects_non_finite_values() -> None:
    with pytest.raises(stats.StatsError, match="non-finite"):
        stats.summarize([1.0, math.inf])


def test_rate_divides_and_rejects_non_positive_durations() -> None:
    assert stats.rate(500, 0.25) == 2000.0
    with pytest.raises(stats.StatsError, match="non-positive"):
        stats.rate(10, 0.0)
    with pytest.raises(stats.StatsError, match="non-positive"):
        stats.rate(10, -1.0)


def test_cpu_used_counts_only_processes_seen_at_both_readings() -> None:
    # A worker restarted during a drain (pid 3 gone, pid 4 new) must not add its whole
    # lifetime's CPU, nor subtract what the gone one had used.
    before = {1: 10.0, 2: 5.0, 3: 7.0}
    after = {1: 10.5, 2: 5.25, 4: 99.0}
    assert processes.cpu_used(before, after) == pytest.approx(0.75)


def test_each_round_rotates_the_order_of_the_systems() -> None:
    # Drift of the machine over a run must not fall on one system: over as many rounds as
    # systems, every system runs once in every position.
    specs = registry.select("celery,huey", include_pynenc=True)
    orders = [[s.name for s in scenarios.round_order(specs, r)] for r in range(4)]
    assert orders == [
        ["pynenc", "celery", "huey"],
        ["celery", "huey", "pynenc"],
        ["huey", "pynenc", "celery"],
        ["pynenc", "celery", "huey"],
    ]
    assert scenarios.round_order([], 2) == []
