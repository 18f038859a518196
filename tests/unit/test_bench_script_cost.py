"""bench script-cost: the busy runner's call, played against a real redis-server."""

from __future__ import annotations

import shutil

import pytest

from bench.registry import BenchError
from bench.script_cost import measure


def test_it_reports_what_the_busy_call_does_per_task() -> None:
    cost = measure(tasks=30)
    # Every task's call finishes one (the result, the state, the final event), starts the
    # one held ahead and claims the next (a pop, a lease): all of them show, per task.
    for command in ("hset", "hget", "zadd", "zrem", "zpopmin", "publish"):
        assert cost.commands.get(command, 0) >= 1, command
    assert cost.commands["publish"] == 1  # one final event per task, no more
    assert cost.usec_per_call > 0
    assert cost.instructions is None
    text = "\n".join(cost.lines())
    assert "nested commands per task" in text and "instructions" not in text


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(BenchError, match="--tasks"):
        measure(tasks=0)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (apt-get install -y valgrind)")
def test_callgrind_counts_the_servers_instructions() -> None:
    cost = measure(tasks=20, callgrind=True)
    assert cost.instructions is not None and cost.instructions > 10_000
