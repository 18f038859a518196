"""The orchestration promises, on every backend (see conftest.backend)."""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.exceptions import (
    ConcurrencyControlledError,
    CycleDetectedError,
    DifferentNonKeyArgumentsError,
    InvocationNotFoundError,
    ResultTimeoutError,
    RetryError,
    SerializationError,
)
from pynenc.invocation import Invocation
from pynenc.status import InvocationStatus as S
from tests.integration import behaviour_tasks as t


def poll(condition: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Wait for a condition with a deadline (for states no event tells us about)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(interval)


def intervals(name: str) -> dict[Any, tuple[float, float]]:
    starts = {arg: ts for task, arg, event, ts in t.events if task == name and event == "start"}
    ends = {arg: ts for task, arg, event, ts in t.events if task == name and event == "end"}
    return {arg: (starts[arg], ends[arg]) for arg in starts if arg in ends}


def overlapping(spans: list[tuple[float, float]]) -> bool:
    ordered = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False))


# ----- basic calls -------------------------------------------------------------------------
def test_result_status_and_attributes(app: Pynenc, runner: Any) -> None:
    invocation = t.add(1, 2)
    assert invocation.result == 3
    assert invocation.status is S.SUCCESS
    assert invocation.arguments == {"x": 1, "y": 2}
    assert invocation.task is t.add
    assert invocation.num_retries == 0
    assert len(invocation.invocation_id) >= 16
    history = [entry.status for entry in app.orchestrator.get_record(invocation.invocation_id).history]  # type: ignore[union-attr]
    assert history == [S.REGISTERED, S.PENDING, S.RUNNING, S.SUCCESS]


def test_arguments_of_every_parameter_kind_reach_the_task(app: Pynenc, runner: Any) -> None:
    assert t.every_kind(1, 2).result == [1, 2, [], 3, []]
    assert t.every_kind(1, 2, 5, 6, c=7, d=8, e=9).result == [1, 2, [5, 6], 7, [("d", 8), ("e", 9)]]
    assert t.keyword_only(1).result == [1, 2]
    assert t.keyword_only(a=1, b=5).result == [1, 5]


def test_values_round_trip_through_the_backend(app: Pynenc, runner: Any) -> None:
    for value in [None, 1.5, "text", [1, [2]], {"a": (1, 2)}, (1, 2), {1, 2}, b"bytes"]:
        assert t.echo(value).result == value


def test_async_task_and_async_result(app: Pynenc, runner: Any) -> None:
    assert t.async_double(21).result == 42

    async def main() -> int:
        return await t.async_double(5).async_result()

    assert asyncio.run(main()) == 10


def test_task_exception_is_reraised_with_type_and_message(app: Pynenc, runner: Any) -> None:
    invocation = t.fail("broken widget")
    with pytest.raises(ValueError, match="broken widget"):
        invocation.result
    assert invocation.status is S.FAILED


def test_task_invocation_inside_the_task(app: Pynenc, runner: Any) -> None:
    invocation = t.current_invocation_id()
    assert invocation.result == invocation.invocation_id


def test_unknown_invocation_is_not_found_not_pending(app: Pynenc) -> None:
    ghost: Invocation[Any] = Invocation(app, t.echo, "does-not-exist", {})
    with pytest.raises(InvocationNotFoundError):
        ghost.status
    with pytest.raises(InvocationNotFoundError):
        ghost.get_result(timeout=2)


# ----- waiting -----------------------------------------------------------------------------
def test_recursive_fibonacci_with_two_threads(app: Pynenc, start_runner: Any) -> None:
    start_runner(max_threads=2)
    assert t.fibonacci(15).get_result(timeout=120) == 610


def test_fifty_parents_waiting_on_three_children_with_two_slots(app: Pynenc, start_runner: Any) -> None:
    start_runner(max_threads=2)
    parents = [t.parent(i) for i in range(50)]
    results = [p.get_result(timeout=60) for p in parents]
    assert results == [sum((i * 3 + k) * 10 for k in range(3)) for i in range(50)]
    # Two slots for fifty waiting parents: waiting paused them and handed their slots over
    # (any one parent may find its children already done when it waits, on a loaded machine
    # even the first one did: so the assertion is about the parents together).
    records = [app.orchestrator.get_record(p.invocation_id) for p in parents]
    paused = [r for r in records if r is not None and S.PAUSED in [h.status for h in r.history]]
    assert len(paused) >= 10, f"only {len(paused)} of 50 parents paused"


def test_waiting_with_no_runner_blocks_without_spinning(app: Pynenc) -> None:
    invocation = t.add(1, 1)
    with pytest.raises(ResultTimeoutError):
        invocation.get_result(timeout=0.2)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    with pytest.raises(ResultTimeoutError):
        invocation.get_result(timeout=1.0)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert elapsed >= 1.0
    assert cpu < 0.5 * elapsed, f"waiting used {cpu:.2f}s of CPU in {elapsed:.2f}s"
    assert invocation.status is S.REGISTERED


def test_parallelize_yields_results_as_they_finish(app: Pynenc, start_runner: Any) -> None:
    start_runner(max_threads=2)
    group = t.slow.parallelize([("slow", 1.0), ("fast", 0.0)])
    assert list(group.results) == ["fast", "slow"]


def test_a_group_inside_a_task_yields_results_as_they_finish(app: Pynenc, start_runner: Any) -> None:
    # Inside a task the group pauses once; small results come with their final events (Redis)
    # and a large one (more than the 512 bytes an event carries) from its record: the order
    # is the order they finished either way.
    start_runner(max_threads=4)
    large = "b" * 2000
    invocation = t.gather_slow([("slow", 1.2), (large, 0.6), ("fast", 0.0)])
    assert invocation.get_result(timeout=30) == ["fast", large, "slow"]


def test_parallelize_accepts_tuples_dicts_and_common_args(app: Pynenc, runner: Any) -> None:
    group = t.add.parallelize([(1,), {"x": 2}], common_args={"y": 10})
    assert sorted(group.results) == [11, 12]
    many = t.add.parallelize([(i, i) for i in range(250)])
    assert len(many) == 250
    assert sorted(many.results) == [2 * i for i in range(250)]


def test_parallelize_queues_in_call_order_across_batches(app: Pynenc) -> None:
    # Batches are registered one while the next is prepared: the queue must still be FIFO.
    previous = t.add.conf.parallel_batch_size
    t.add.conf.parallel_batch_size = 40
    try:
        group = t.add.parallelize([(i, 0) for i in range(130)])
    finally:
        t.add.conf.parallel_batch_size = previous
    ids = [invocation.invocation_id for invocation in group]
    claimed = [c.invocation_id for c in app.orchestrator.claim("r1", 200, 30)]
    assert claimed == ids


def test_parallelize_inside_a_task(app: Pynenc, runner: Any) -> None:
    assert t.parent_group(6).get_result(timeout=30) == [0, 10, 20, 30, 40, 50]


def test_async_results_of_a_group(app: Pynenc, runner: Any) -> None:
    group = t.add.parallelize([(i, 1) for i in range(5)])

    async def collect() -> list[int]:
        return [value async for value in group.async_results()]

    assert sorted(asyncio.run(collect())) == [1, 2, 3, 4, 5]


def test_direct_task_returns_the_result(app: Pynenc, runner: Any) -> None:
    assert t.direct_add(2, 3) == 5


def test_direct_task_with_parallel_and_aggregate(app: Pynenc, runner: Any) -> None:
    assert t.square_all([1, 2, 3, 4]) == 30


# ----- priority ----------------------------------------------------------------------------
def test_most_waited_on_invocation_runs_first(app: Pynenc, start_runner: Any) -> None:
    """With both slots busy, a waited-on invocation jumps the queue ahead of older work."""
    t.gates["hold"] = threading.Event()
    t.gates["go"] = threading.Event()
    start_runner(max_threads=2)
    hold = t.gate("hold")
    poll(lambda: ("gate", "hold", "start") in [e[:3] for e in t.events])
    waiter = t.waits_for_named("b")
    poll(lambda: ("waits_for_named", "b", "start") in [e[:3] for e in t.events])
    older = [t.slow(f"old{i}", 0.0) for i in range(3)]
    awaited = t.slow("b", 0.0)
    t.named["b"] = awaited.invocation_id
    t.gates["go"].set()  # the waiter now waits on "b": its slot frees and "b" has priority 1
    assert waiter.get_result(timeout=30) == "b"
    t.gates["hold"].set()
    assert hold.get_result(timeout=30) == "hold"
    for invocation in older:
        invocation.get_result(timeout=30)
    starts = [arg for task, arg, event, _ in t.events if task == "slow" and event == "start"]
    assert starts[0] == "b", starts


def test_priority_follows_the_number_of_waiters(app: Pynenc) -> None:
    """Contract level: each recorded wait raises the awaited invocation in the queue."""
    orchestrator = app.orchestrator
    first, second, third = t.echo(1), t.echo(2), t.echo(3)
    waiters = [t.echo(f"w{i}") for i in range(3)]
    claimed = orchestrator.claim("runner-a", 6, 30)
    assert [c.invocation_id for c in claimed[:3]] == [first.invocation_id, second.invocation_id, third.invocation_id]
    # all six are claimed now; put first/second/third back in the queue the way recovery would
    orchestrator.release("runner-a", [first.invocation_id, second.invocation_id, third.invocation_id])
    assert orchestrator.wait("runner-a", waiters[0].invocation_id, [third.invocation_id])
    assert orchestrator.wait("runner-a", waiters[1].invocation_id, [third.invocation_id])
    assert orchestrator.wait("runner-a", waiters[2].invocation_id, [second.invocation_id])
    order = [c.invocation_id for c in orchestrator.claim("runner-b", 3, 30)]
    assert order == [third.invocation_id, second.invocation_id, first.invocation_id]


# ----- cycles ------------------------------------------------------------------------------
def test_mutual_wait_raises_cycle_error_naming_the_chain(app: Pynenc, runner: Any) -> None:
    with pytest.raises(CycleDetectedError) as info:
        t.ping_a(7).get_result(timeout=30)
    message = str(info.value)
    assert "ping_a" in message and "ping_b" in message and "n=7" in message


def test_same_call_again_is_a_cycle_and_does_not_recurse(app: Pynenc, start_runner: Any) -> None:
    # One slot makes the count exact: with more, the repeat may be claimed before its caller
    # waits on it, and then it is stopped one level deeper (still failed, still bounded).
    start_runner(max_threads=1)
    with pytest.raises(CycleDetectedError):
        t.recurse_same(3).get_result(timeout=30)
    # the repeated call was stopped before it ran: no runaway recursion
    calls = [r for r in app.orchestrator.iter_records() if r.task_id.endswith("recurse_same")]
    assert len(calls) == 2
    assert all(r.status is S.FAILED for r in calls)


def test_cycle_error_can_be_caught_inside_the_task(app: Pynenc, runner: Any) -> None:
    assert t.catch_cycle(1).get_result(timeout=30) == "CycleDetectedError"


# ----- concurrency control -----------------------------------------------------------------
def test_running_concurrency_task_never_overlaps(app: Pynenc, start_runner: Any) -> None:
    start_runner(max_threads=4)
    invocations = [t.exclusive(i, 0.05) for i in range(6)]
    assert sorted(inv.get_result(timeout=30) for inv in invocations) == list(range(6))
    spans = list(intervals("exclusive").values())
    assert len(spans) == 6
    assert not overlapping(spans)
    rerouted = [r for r in app.orchestrator.iter_records() if S.CONCURRENCY_CONTROLLED in [h.status for h in r.history]]
    assert rerouted, "with 4 threads some invocations must have been held back"


def test_running_concurrency_keys_only_blocks_the_same_key(app: Pynenc, start_runner: Any) -> None:
    start_runner(max_threads=4)
    invocations = [t.keyed(key, i, 0.1) for i in range(3) for key in ("a", "b")]
    for inv in invocations:
        inv.get_result(timeout=30)
    spans = intervals("keyed")
    for key in ("a", "b"):
        assert not overlapping([span for (k, _), span in spans.items() if k == key])
    assert overlapping(list(spans.values())), "different keys should run side by side"


def test_concurrency_controlled_final_without_reroute(app: Pynenc, start_runner: Any) -> None:
    start_runner(max_threads=2)
    first = t.exclusive_no_reroute(1, 0.5)
    poll(lambda: first.status is S.RUNNING)
    second = t.exclusive_no_reroute(2, 0.0)
    with pytest.raises(ConcurrencyControlledError):
        second.get_result(timeout=30)
    assert second.status is S.CONCURRENCY_CONTROLLED_FINAL
    assert first.get_result(timeout=30) == 1


def test_registration_concurrency_arguments(app: Pynenc) -> None:
    first, again, other = t.register_once(1), t.register_once(1), t.register_once(2)
    assert first.invocation_id == again.invocation_id
    assert other.invocation_id != first.invocation_id


def test_registration_concurrency_within_one_parallelize_batch(app: Pynenc) -> None:
    # A batch is registered in one backend call: a repeat later in the same batch must still
    # find the first by its key, and the queue keeps the batch's call order.
    group = t.register_once.parallelize([(1,), (1,), (2,), (1,)])
    ids = [invocation.invocation_id for invocation in group]
    assert ids[0] == ids[1] == ids[3] != ids[2]
    claimed = [c.invocation_id for c in app.orchestrator.claim("r1", 10, 30)]
    assert claimed == [ids[0], ids[2]]


def test_registration_concurrency_task(app: Pynenc, start_runner: Any) -> None:
    first, second = t.register_once_per_task(1), t.register_once_per_task(2)
    assert first.invocation_id == second.invocation_id
    start_runner()
    assert first.get_result(timeout=30) == 1
    # once it ran, a new call makes a new invocation
    assert t.register_once_per_task(3).invocation_id != first.invocation_id


def test_registration_concurrency_keys_with_different_other_args_raises(app: Pynenc) -> None:
    first = t.register_by_key("k", 1)
    assert t.register_by_key("k", 1).invocation_id == first.invocation_id
    with pytest.raises(DifferentNonKeyArgumentsError):
        t.register_by_key("k", 2)
    assert t.register_by_key("other", 2).invocation_id != first.invocation_id


# ----- retries -----------------------------------------------------------------------------
def test_retry_until_max_retries_then_failed(app: Pynenc, runner: Any) -> None:
    invocation = t.always_retry()
    with pytest.raises(RetryError, match="try again"):
        invocation.get_result(timeout=30)
    assert invocation.num_retries == 2
    statuses = [h.status for h in app.orchestrator.get_record(invocation.invocation_id).history]  # type: ignore[union-attr]
    assert statuses.count(S.RETRY) == 2 and statuses[-1] is S.FAILED


def test_retry_for_custom_exceptions_succeeds_eventually(app: Pynenc, runner: Any) -> None:
    invocation = t.flaky(app.app_id, 2)
    assert invocation.get_result(timeout=30) == 3
    assert invocation.num_retries == 2


# ----- serialization -----------------------------------------------------------------------
def test_unserializable_argument_fails_at_call_time(app: Pynenc) -> None:
    with pytest.raises(SerializationError, match="'value'"):
        t.echo(i for i in range(3))
    assert app.orchestrator.status_counts() == {}


def test_unserializable_result_fails_the_invocation(app: Pynenc, runner: Any) -> None:
    with pytest.raises(SerializationError, match="returns_generator"):
        t.returns_generator().get_result(timeout=30)


# ----- runner lifecycle --------------------------------------------------------------------
def test_stop_runner_loop_leaves_nothing_running(app: Pynenc, start_runner: Any) -> None:
    t.gates["stuck"] = threading.Event()
    runner = start_runner(max_threads=2)
    invocation = t.gate("stuck")
    poll(lambda: invocation.status is S.RUNNING)
    started = time.monotonic()
    runner.stop_runner_loop()
    assert time.monotonic() - started < 5
    assert invocation.status is S.REROUTED
    t.gates["stuck"].set()


def test_purge_removes_everything(app: Pynenc, runner: Any) -> None:
    done = t.add(1, 2)
    done.get_result(timeout=30)
    app.purge()
    with pytest.raises(InvocationNotFoundError):
        done.status
    assert app.orchestrator.queue_depth() == 0


def test_dev_mode_runs_inline_without_runner(app: Pynenc) -> None:
    app.conf.dev_mode_force_sync_tasks = True
    assert t.add(2, 2).result == 4
    assert t.fibonacci(6).result == 8
    assert t.square_all([1, 2]) == 5
    with pytest.raises(ValueError, match="inline"):
        t.fail("inline").result
    with pytest.raises(SerializationError):
        t.echo(i for i in range(3))
