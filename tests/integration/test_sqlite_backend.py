"""SQLite-specific promises: apps sharing a file, lease recovery, expiry, info, operator actions."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pynenc import Pynenc, PynencBuilder
from pynenc.exceptions import InvocationKilledError, InvocationStatusTransitionError, StalledInvocationError
from pynenc.invocation import final_value
from pynenc.models import CallSpec, Outcome, OutcomeKind
from pynenc.status import InvocationStatus as S

DONE = Outcome(OutcomeKind.SUCCESS, "j1")


def sqlite_app(path: Path, app_id: str) -> Pynenc:
    return PynencBuilder().app_id(app_id).sqlite(str(path)).logging_level("WARNING").build()


def spec(invocation_id: str, running_key: str | None = None, registration_key: str | None = None) -> CallSpec:
    return CallSpec(
        invocation_id,
        "tests.sqlite.task",
        {"x": "j1"},
        f"ck-{invocation_id}",
        registration_key=registration_key,
        running_key=running_key,
    )


def poll(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.01)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "backend.db"


def test_two_apps_in_one_file_do_not_see_each_other(path: Path) -> None:
    first, second = sqlite_app(path, "first"), sqlite_app(path, "second")
    first.orchestrator.register([spec("same-id", running_key="k", registration_key="r"), spec("only-first")])
    second.orchestrator.register([spec("same-id", running_key="k", registration_key="r")])
    assert first.orchestrator.queue_depth() == 2 and second.orchestrator.queue_depth() == 1
    # same registration key in the other app is another invocation
    again = second.orchestrator.register([spec("other-id", registration_key="r")])
    assert again[0].invocation_id == "same-id" and not again[0].created
    # the same running key in both apps does not block across apps
    assert [c.invocation_id for c in first.orchestrator.claim("runner-1", 1, 30)] == ["same-id"]
    assert [c.invocation_id for c in second.orchestrator.claim("runner-2", 5, 30)] == ["same-id"]
    assert second.orchestrator.get_status("same-id") is S.RUNNING
    assert second.orchestrator.get_status("only-first") is None
    first.state_backend.publish_info("runner", "r1", {"app": "first"}, 60)
    assert second.state_backend.list_info("runner") == {}
    first.purge()
    assert first.orchestrator.status_counts() == {}
    assert first.state_backend.list_info("runner") == {}
    assert second.orchestrator.status_counts() == {S.RUNNING: 1}
    assert second.orchestrator.finish("runner-2", "same-id", DONE)
    assert final_value(second, "same-id") == 1
    first.close()
    second.close()


def test_expired_leases_are_recovered_with_a_stall_counter(path: Path) -> None:
    app = sqlite_app(path, "stalls")
    orchestrator = app.orchestrator
    orchestrator.register([spec("poison")])
    for stall in (1, 2):
        claimed = orchestrator.claim(f"runner-{stall}", 1, 0.0)  # the lease is over at once
        assert [c.invocation_id for c in claimed] == ["poison"]
        assert orchestrator.recover_expired(max_stalls=2) == ["poison"]
        record = orchestrator.get_record("poison")
        assert record is not None and record.stalls == stall and record.status is S.REROUTED
        assert record.owner is None
        # the runner that lost its lease can neither finish nor renew
        assert not orchestrator.finish(f"runner-{stall}", "poison", DONE)
        assert orchestrator.renew_leases(f"runner-{stall}", ["poison"], 30) == ["poison"]
    orchestrator.claim("runner-3", 1, 0.0)
    assert orchestrator.recover_expired(max_stalls=2) == ["poison"]
    record = orchestrator.get_record("poison")
    assert record is not None and record.status is S.FAILED and record.stalls == 3
    history = [entry.status for entry in record.history]
    assert history.count(S.RUNNING_RECOVERY) == 3 and history.count(S.REROUTED) == 2
    with pytest.raises(StalledInvocationError, match="max_stalls=2"):
        final_value(app, "poison")
    assert orchestrator.queue_depth() == 0
    app.close()


def test_renewed_leases_are_not_recovered(path: Path) -> None:
    app = sqlite_app(path, "renew")
    orchestrator = app.orchestrator
    orchestrator.register([spec("kept")])
    orchestrator.claim("runner", 1, 0.0)
    assert orchestrator.renew_leases("runner", ["kept"], 30) == []
    assert orchestrator.recover_expired(max_stalls=3) == []
    assert orchestrator.finish("runner", "kept", DONE)
    app.close()


def test_recovery_releases_the_running_key(path: Path) -> None:
    app = sqlite_app(path, "keys")
    orchestrator = app.orchestrator
    orchestrator.register([spec("holder", running_key="k"), spec("parked", running_key="k")])
    assert [c.invocation_id for c in orchestrator.claim("runner", 2, 0.0)] == ["holder"]
    assert orchestrator.get_status("parked") is S.CONCURRENCY_CONTROLLED
    orchestrator.recover_expired(max_stalls=3)
    assert orchestrator.get_status("parked") is S.REROUTED
    claimed = [c.invocation_id for c in orchestrator.claim("runner-2", 2, 30)]
    assert claimed == ["holder"]  # the recovered one keeps its place; the other waits again
    assert orchestrator.get_status("parked") is S.CONCURRENCY_CONTROLLED
    assert orchestrator.finish("runner-2", "holder", DONE)
    assert [c.invocation_id for c in orchestrator.claim("runner-2", 1, 30)] == ["parked"]
    app.close()


def _claim_then_hang(path: Path, claimed: Any) -> None:
    app = sqlite_app(path, "killed")
    app.orchestrator.claim("doomed-runner", 1, 0.5)
    claimed.set()
    while True:
        time.sleep(1)


def test_work_of_a_sigkilled_process_is_recovered(path: Path) -> None:
    app = sqlite_app(path, "killed")
    app.orchestrator.register([spec("orphan")])
    context = multiprocessing.get_context("fork")
    claimed = context.Event()
    child = context.Process(target=_claim_then_hang, args=(path, claimed))
    child.start()
    try:
        assert claimed.wait(30)
        assert app.orchestrator.get_status("orphan") is S.RUNNING
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert poll(lambda: app.orchestrator.recover_expired(max_stalls=3)) == ["orphan"]
    assert [c.invocation_id for c in app.orchestrator.claim("survivor", 1, 30)] == ["orphan"]
    assert app.orchestrator.finish("survivor", "orphan", DONE)
    record = app.orchestrator.get_record("orphan")
    assert record is not None and record.stalls == 1 and record.status is S.SUCCESS
    app.close()


def _register_from_child(path: Path, index: int) -> None:
    app = sqlite_app(path, "forked")
    app.orchestrator.register([spec(f"from-child-{index}")])


def test_a_process_with_open_connections_can_fork_users_of_the_file(path: Path) -> None:
    app = sqlite_app(path, "forked")
    app.orchestrator.register([spec("from-parent")])  # the parent's connection is open
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_register_from_child, args=(path, index)) for index in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0]
    assert app.orchestrator.get_status("from-child-1") is S.REGISTERED
    assert app.orchestrator.queue_depth() == 3
    app.close()


def test_results_expire_after_result_ttl(path: Path) -> None:
    app = sqlite_app(path, "ttl")
    app.conf.result_ttl = 0.0
    orchestrator = app.orchestrator
    orchestrator.register([spec("short-lived"), spec("still-running")])
    orchestrator.claim("runner", 2, 30)
    orchestrator.finish("runner", "short-lived", DONE)
    poll(lambda: orchestrator.recover_expired(3) == [] and orchestrator.get_status("short-lived") is None)
    assert orchestrator.get_status("still-running") is S.RUNNING
    app.close()
    with sqlite3.connect(path) as conn:
        left = conn.execute("SELECT COUNT(*) FROM history WHERE id = 'short-lived'").fetchone()[0]
    conn.close()
    assert left == 0


def test_a_move_outside_the_transition_table_is_refused_and_rolled_back(path: Path) -> None:
    app = sqlite_app(path, "table")
    orchestrator = app.orchestrator
    orchestrator.register([spec("queued")])
    store = orchestrator.store  # type: ignore[attr-defined]
    with pytest.raises(InvocationStatusTransitionError, match="REGISTERED to SUCCESS"):
        with store.transaction() as conn:
            conn.execute("UPDATE invocations SET result = 'jtampered' WHERE id = 'queued'")
            orchestrator._move(conn, "queued", S.SUCCESS)  # type: ignore[attr-defined]
    record = orchestrator.get_record("queued")
    assert record is not None and record.status is S.REGISTERED and record.result is None
    assert [entry.status for entry in record.history] == [S.REGISTERED]
    app.close()


def test_published_info_expires(path: Path) -> None:
    app = sqlite_app(path, "info")
    state = app.state_backend
    state.publish_info("runner", "long", {"pid": 1}, 60)
    state.publish_info("runner", "short", {"pid": 2}, 0.05)
    state.publish_info("supervisor", "s", {"host": "h"}, 60)
    assert state.list_info("runner") == {"long": {"pid": 1}, "short": {"pid": 2}}
    poll(lambda: "short" not in state.list_info("runner"))
    state.publish_info("runner", "long", {"pid": 3}, 60)
    assert state.list_info("runner") == {"long": {"pid": 3}}
    assert state.list_info("supervisor") == {"s": {"host": "h"}}
    app.close()


def test_kill_and_retry(path: Path) -> None:
    app = sqlite_app(path, "operator")
    orchestrator = app.orchestrator
    orchestrator.register([spec("victim"), spec("running")])
    assert orchestrator.kill("victim")
    assert not orchestrator.kill("victim")
    with pytest.raises(InvocationKilledError):
        final_value(app, "victim")
    assert [c.invocation_id for c in orchestrator.claim("runner", 5, 30)] == ["running"]
    assert orchestrator.kill("running")
    assert not orchestrator.finish("runner", "running", DONE)
    assert orchestrator.retry("victim")
    assert orchestrator.get_status("victim") is S.REROUTED
    assert [c.invocation_id for c in orchestrator.claim("runner", 5, 30)] == ["victim"]
    assert orchestrator.finish("runner", "victim", DONE)
    assert not orchestrator.retry("victim")  # SUCCESS is final for good
    app.close()


def test_broker_inspection(path: Path) -> None:
    app = sqlite_app(path, "broker")
    app.orchestrator.register([spec("a"), spec("b"), spec("c")])
    broker = app.broker
    broker.add_priority("c", 2)
    assert broker.peek(2) == [("c", 2), ("a", 0)]
    assert broker.depth() == 3
    broker.remove("a")
    assert broker.pop() == "c"
    broker.enqueue("a", 0, front=True)
    assert [item for item, _ in broker.peek()] == ["a", "b"]
    broker.purge()
    assert broker.depth() == 0
    app.close()


def _finish_later(path: Path, ready: Any, app_id: str = "wake") -> None:
    app = sqlite_app(path, app_id)
    ready.wait(30)
    claimed = app.orchestrator.claim("child", 1, 30)
    app.orchestrator.finish("child", claimed[0].invocation_id, DONE)


def test_wait_final_sees_a_finish_from_another_process(path: Path) -> None:
    app = sqlite_app(path, "wake")
    app.orchestrator.register([spec("awaited")])
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_finish_later, args=(path, ready))
    child.start()
    assert app.orchestrator.wait_final(["awaited"], 0.05) == set()
    ready.set()
    done: set[str] = set()
    deadline = time.monotonic() + 30
    while not done and time.monotonic() < deadline:
        done = app.orchestrator.wait_final(["awaited"], 1.0)
    child.join(30)
    assert done == {"awaited"}
    app.close()


def test_wait_final_coming_back_sees_what_finished_in_between(path: Path) -> None:
    # A wait loop calls wait_final again for the same ids; what went final between two calls
    # (no watcher registered then) must be seen by the next one.
    app = sqlite_app(path, "again")
    app.orchestrator.register([spec("first"), spec("second")])
    assert app.orchestrator.wait_final(["first", "second"], 0.05) == set()
    claimed = app.orchestrator.claim("runner", 1, 30)
    assert app.orchestrator.finish("runner", claimed[0].invocation_id, DONE)
    assert app.orchestrator.wait_final(["first", "second"], 0.05) == {claimed[0].invocation_id}
    app.close()


def test_many_waiters_are_each_woken_by_their_own_invocation(path: Path) -> None:
    app = sqlite_app(path, "many")
    ids = [f"w{i}" for i in range(40)]
    app.orchestrator.register([spec(i) for i in ids])
    woken: dict[str, set[str]] = {}
    watching = threading.Barrier(len(ids) + 1)

    def waiter(invocation_id: str) -> None:
        watching.wait(10)
        done: set[str] = set()
        deadline = time.monotonic() + 30
        while not done and time.monotonic() < deadline:
            done = app.orchestrator.wait_final([invocation_id], 1.0)
        woken[invocation_id] = done

    threads = [threading.Thread(target=waiter, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    watching.wait(10)
    for claimed in app.orchestrator.claim("runner", len(ids), 30):
        assert app.orchestrator.finish("runner", claimed.invocation_id, DONE)
    for thread in threads:
        thread.join(30)
    assert woken == {i: {i} for i in ids}
    app.close()


def test_a_published_id_that_is_not_final_does_not_end_the_wait(path: Path) -> None:
    # The watcher's publication only says "look": the status decides (e.g. retried since).
    app = sqlite_app(path, "stale")
    app.orchestrator.register([spec("retried")])
    orchestrator: Any = app.orchestrator
    watcher = orchestrator._final_watcher()
    returned = threading.Event()

    def keep_publishing() -> None:
        while not returned.wait(0.01):
            with watcher.lock:
                for event in watcher._wanted.get("retried", ()):
                    event.published.add("retried")
                    event.set()

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        assert app.orchestrator.wait_final(["retried"], 0.5) == set()
    finally:
        returned.set()
        publisher.join(5)
    app.close()


def test_a_commit_in_another_process_rings_the_waiting_process(path: Path) -> None:
    from pynenc import sqlite_sync

    app = sqlite_app(path, "bell")
    app.orchestrator.register([spec("rung")])
    db_file = app.state_backend.path  # type: ignore[attr-defined]
    sqlite_sync.doorbell_for(db_file).listen()
    markers = Path(f"{db_file}.wake")
    assert (markers / str(os.getpid())).is_file()
    (markers / "99999999").touch()  # a process that is gone (no pid is this large)
    signal = sqlite_sync.signal_for(db_file)
    before = signal.final
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    ready.set()
    child = context.Process(target=_finish_later, args=(path, ready), kwargs={"app_id": "bell"})
    child.start()
    child.join(30)
    assert child.exitcode == 0
    poll(lambda: signal.final > before)  # woken by the child's commit, not by polling the file
    assert not (markers / "99999999").exists()
    assert app.orchestrator.get_status("rung") is S.SUCCESS
    app.close()


def _count_open_files(path: Path, result: Any) -> None:
    """In the child right after fork: how many inherited descriptors point at the database file."""
    target = str(path.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                count += 1
        except OSError:
            continue
    result.value = count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_no_connection_is_open_across_fork(path: Path) -> None:
    app = sqlite_app(path, "fork-gate")
    app.orchestrator.register([spec("before-fork")])
    assert app.orchestrator.queue_depth() == 1  # this thread's connection is open now
    parent_fds = [fd for fd in os.listdir("/proc/self/fd") if _points_to(fd, path)]
    assert parent_fds, "the parent should hold the file open before the fork"
    context = multiprocessing.get_context("fork")
    result = context.Value("i", -1)
    child = context.Process(target=_count_open_files, args=(path, result))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert result.value == 0
    # the parent reopens on next use
    assert app.orchestrator.get_status("before-fork") is S.REGISTERED
    app.close()


def _points_to(fd: str, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve())
    except OSError:
        return False


def _wait_briefly(path: Path) -> None:
    app = sqlite_app(path, "forked")
    app.orchestrator.wait_final(["nothing-final"], 0.05)
    os._exit(0)


def test_a_child_forked_while_a_thread_sets_up_waiting_can_wait(path: Path) -> None:
    # A forked runner inherits the parent's locks in whatever state other threads left
    # them; waiting for results in the child must not depend on them.
    from pynenc import sqlite_sync

    app = sqlite_app(path, "forked")
    app.orchestrator.register([spec("nothing-final")])
    assert app.orchestrator.wait_final(["nothing-final"], 0.01) == set()
    with sqlite_sync.setup_lock():  # as if another thread were creating its watcher
        child = multiprocessing.get_context("fork").Process(target=_wait_briefly, args=(path,))
        child.start()
        child.join(20)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    app.close()
