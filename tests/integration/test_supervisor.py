"""The supervisor daemon end to end: real processes, real signals, SQLite and Redis."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from pynenc.supervisors.arbiter import PAUSE_GRACE_SECONDS

from pynenc.status import InvocationStatus
from tests.integration import test_supervisor_tasks as t
from tests.integration.test_supervisor_tasks import (  # noqa: F401  (fixtures)
    DaemonFactory,
    backend_fixture,
    daemon_fixture,
    env_fixture,
)

S = InvocationStatus


def test_2000_invocations_with_two_processes_then_clean_exit_on_term(daemon: DaemonFactory) -> None:
    sup = daemon("--processes", "2", "--log-level", "DEBUG").ready()  # per-invocation lines are DEBUG
    invocations = list(t.add.parallelize([(i, i) for i in range(2000)]))
    assert sorted(inv.get_result(120) for inv in invocations) == [2 * i for i in range(2000)]
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0
    assert len(sup.events_named("runner started")) >= 2
    assert sup.events_named("supervisor stopped")[-1]["code"] == 0
    done = [e for e in sup.events_named("invocation done")]
    assert len(done) == 2000
    assert all({"task_id", "invocation_id", "runner_pid"} <= set(e) for e in done)
    assert {e["runner_pid"] for e in done} <= {e["runner_pid"] for e in sup.events_named("runner started")}


def test_the_supervisors_only_children_are_its_runners(daemon: DaemonFactory) -> None:
    # No multiprocessing resource tracker or other helper: each would be a whole interpreter
    # of memory per pool (the slot table is shared memory that the supervisor cleans up itself).
    sup = daemon("--processes", "2").ready()
    t.wait_until(lambda: len(sup.runner_pids()) == 2, 30, "two runners")
    started = {e["runner_pid"] for e in sup.events_named("runner started")}
    assert sup.runner_pids() <= started
    assert t.add(1, 2).get_result(60) == 3
    assert sup.runner_pids() <= started


def test_fan_out_completes_with_two_processes_never_more_than_two_running(daemon: DaemonFactory) -> None:
    sup = daemon("--processes", "2", "--max-paused", "4").ready()
    parents = list(t.parent.parallelize([(i,) for i in range(100)]))
    assert [p.get_result(120) for p in parents] == [2 * i + 3 for i in range(100)]
    ids = [p.invocation_id for p in parents]
    children = [r.invocation_id for r in t.app.orchestrator.iter_records() if r.parent_invocation_id in set(ids)]
    assert len(children) == 200
    assert any(
        entry.status is S.PAUSED
        for i in ids
        for entry in t.app.orchestrator.get_record(i).history  # type: ignore[union-attr]
    ), "no parent ever paused: the test did not exercise slot handover"
    assert t.max_executing_at_once(ids + children) <= 2
    # Surplus runners forked for the paused parents retire afterwards; they must unpublish
    # themselves, or `pynenc status runners` lists every one of them as dead.
    t.wait_until(lambda: len(published_runner_pids()) == 2, 20, "surplus runners to retire")
    assert all(pid_alive(pid) for pid in published_runner_pids())
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_fan_out_never_deadlocks_even_with_max_paused_zero(daemon: DaemonFactory) -> None:
    # With no extra processes allowed, both runners soon hold a paused parent and nobody is
    # left to run the children: the supervisor must fork past max_paused rather than hang.
    sup = daemon("--processes", "2", "--max-paused", "0").ready()
    parents = list(t.parent.parallelize([(i,) for i in range(20)]))
    assert [p.get_result(60) for p in parents] == [2 * i + 3 for i in range(20)]
    ids = [p.invocation_id for p in parents]
    children = [r.invocation_id for r in t.app.orchestrator.iter_records() if r.parent_invocation_id in set(ids)]
    assert t.max_executing_at_once(ids + children) <= 2
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@pytest.mark.parametrize("backend", ["redis"])  # the backend with claim_awaited
def test_a_waiting_task_runs_what_it_waits_on_in_its_own_slot(daemon: DaemonFactory) -> None:
    # One process: a parent that paused would hand its slot to a runner forked for it. On
    # Redis the parent's runner runs the queued children itself instead, nested in its slot.
    sup = daemon("--processes", "1").ready()
    parents = list(t.parent.parallelize([(i,) for i in range(20)]))
    assert [p.get_result(60) for p in parents] == [2 * i + 3 for i in range(20)]
    records = list(t.app.orchestrator.iter_records())
    for record in records:
        if record.parent_invocation_id is None:
            assert [e.status for e in record.history].count(S.PAUSED) == 2  # it waited twice
            continue
        parent = next(r for r in records if r.invocation_id == record.parent_invocation_id)
        ran_by = {e.runner_id for e in record.history if e.status is S.RUNNING}
        assert ran_by == {e.runner_id for e in parent.history if e.status is S.RUNNING}
    assert len(sup.events_named("runner started")) == 1  # nothing was forked for a pause
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_waits_nested_deeper_than_a_runner_runs_them_still_complete(daemon: DaemonFactory) -> None:
    # 12 waits inside each other with one process: a runner runs what is waited on nested in
    # the waiting invocation only so deep (MAX_NESTED_RUNS on Redis; never on SQLite), then
    # the waiting one pauses and a runner is forked for its slot, as for any pause.
    sup = daemon("--processes", "1").ready()
    assert t.chain(12).get_result(60) == 12
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_awaited_work_under_running_concurrency_still_runs_one_at_a_time(daemon: DaemonFactory) -> None:
    # Children that may run only one at a time, awaited by parents on two processes: a runner
    # that claims an awaited child while another runs must park it, not run it (Redis: the
    # help scripts go through the same claim as any runner).
    sup = daemon("--processes", "2").ready()
    parents = list(t.gather_one_at_a_time.parallelize([(3,) for _ in range(4)]))
    assert [p.get_result(60) for p in parents] == [3, 3, 3, 3]
    children = [r.invocation_id for r in t.app.orchestrator.iter_records() if r.task_id == t.one_at_a_time.task_id]
    assert len(children) == 12
    assert t.max_executing_at_once(children) == 1
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@pytest.mark.parametrize("backend", ["sqlite"])  # where every wait pauses (Redis runs the child itself)
def test_a_brief_pause_forks_no_runner(daemon: DaemonFactory) -> None:
    # One parent at a time on two processes: each pause lasts as long as a child on the other
    # runner takes (milliseconds), shorter than PAUSE_GRACE_SECONDS: no process is forked.
    # On a loaded machine a pause can still outlast the grace: only those may fork a runner
    # (counted from the parents' histories, generously: from half the grace).
    sup = daemon("--processes", "2").ready()
    paused = long_pauses = 0
    for _ in range(10):
        parent = t.wait_for_nap(0.005)
        assert parent.get_result(60) == 0.005
        history = t.app.orchestrator.get_record(parent.invocation_id).history  # type: ignore[union-attr]
        for entry, following in zip(history, history[1:], strict=False):
            if entry.status is S.PAUSED:
                paused += 1
                long_pauses += following.timestamp - entry.timestamp >= PAUSE_GRACE_SECONDS / 2
    assert paused >= 5  # the child was still running when its parent waited
    assert paused - long_pauses >= 5, "too few brief pauses to test anything (a very slow machine?)"
    assert len(sup.events_named("runner started")) - 2 <= long_pauses
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


def published_runner_pids() -> list[int]:
    return [int(info["pid"]) for info in t.app.state_backend.list_info("runner").values()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_of_a_runner_mid_invocation_completes_on_another(daemon: DaemonFactory, tmp_path: Path) -> None:
    sup = daemon("--processes", "2").ready()
    marker = tmp_path / "started"
    inv = t.slow(str(marker), 1.0)
    victim = int(t.wait_until(lambda: marker.exists() and marker.read_text(), 20, "slow task to start"))
    marker.unlink()
    os.kill(victim, signal.SIGKILL)
    assert inv.get_result(60) != victim  # finished, on another runner process
    record = t.app.orchestrator.get_record(inv.invocation_id)
    assert record is not None and record.status is S.SUCCESS and record.stalls == 1
    assert S.RUNNING_RECOVERY in [h.status for h in record.history]
    warnings = sup.events_named("runner killed by SIGKILL (perhaps out of memory)")
    assert [w["runner_pid"] for w in warnings] == [victim]
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0
