"""Run permits across real forked processes: the limit holds, resumers go first, death frees everything."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynenc.supervisors import permits
from pynenc.supervisors.permits import Doorbells, SlotWriter, create_lock_file
from pynenc.supervisors.slot_table import SlotState, SlotTable


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[SlotTable, str]]:
    table = SlotTable.create(8)
    lock_path = create_lock_file(str(tmp_path))
    try:
        yield table, lock_path
    finally:
        table.close()


def _fork(body: object) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_never_more_running_than_the_limit_across_processes(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    table.set_limit(2)
    ctx = multiprocessing.get_context("fork")
    inside, peak, lock = ctx.RawValue("i", 0), ctx.RawValue("i", 0), ctx.Lock()

    def worker(index: int) -> None:
        writer = SlotWriter(table, index, lock_path, threading.Event())
        for _ in range(30):
            assert writer.acquire(timeout=30)
            with lock:
                inside.value += 1
                peak.value = max(peak.value, inside.value)
            time.sleep(0.001)  # the "work" done under the permit
            with lock:
                inside.value -= 1
            writer.set_idle()

    pids = [_fork(lambda i=i: worker(i)) for i in range(6)]
    assert [_exit_code(pid) for pid in pids] == [0] * 6
    assert peak.value == 2
    assert table.count(SlotState.RUNNING) == 0


def test_a_resuming_slot_goes_before_new_claims(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    table.set_limit(2)
    stopping = threading.Event()
    holder, resumer, claimer = (SlotWriter(table, i, lock_path, stopping) for i in range(3))
    assert holder.acquire(timeout=1)
    resumer.write(state=SlotState.RESUMING)
    assert not claimer.acquire(timeout=0.1), "a claim must wait while an invocation waits to resume"
    assert resumer.acquire(resuming=True, timeout=1)
    assert table.read(1).state is SlotState.RUNNING
    assert not claimer.acquire(timeout=0.1)  # both permits taken now
    holder.set_idle()
    assert claimer.acquire(timeout=1)


def test_a_resumer_wakes_idle_runners_holding_every_permit(pool: tuple[SlotTable, str]) -> None:
    """Idle runners that wait for work holding their permit (RUNNING, no invocation) are asked
    to give it back when a paused invocation wants to resume; busy ones are not counted."""
    table, lock_path = pool
    table.set_limit(2)
    stopping = threading.Event()
    idle, busy, resumer = (SlotWriter(table, i, lock_path, stopping) for i in range(3))
    assert idle.acquire(timeout=1) and busy.acquire(timeout=1)
    busy.set_running("inv-busy", "tasks.work")
    resumer.set_running("inv-paused", "tasks.parent")
    resumer.set_paused()
    asked: list[int] = []

    def wake_holders(count: int) -> None:
        asked.append(count)
        idle.set_idle()  # what a woken idle runner that claimed nothing does

    assert resumer.acquire(resuming=True, timeout=5, wake_holders=wake_holders)
    assert asked == [1]
    assert table.read(2).invocation_id == "inv-paused"
    assert [table.read(i).state for i in range(3)] == [SlotState.IDLE, SlotState.RUNNING, SlotState.RUNNING]


def test_resume_keeps_the_invocation_fields(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    writer = SlotWriter(table, 0, lock_path, threading.Event())
    writer.set_running("inv-1", "tasks.parent")
    started = table.read(0).started_at
    writer.set_paused()
    assert writer.acquire(resuming=True, timeout=1)
    slot = table.read(0)
    assert (slot.state, slot.invocation_id, slot.task_id, slot.started_at) == (
        SlotState.RUNNING,
        "inv-1",
        "tasks.parent",
        started,
    )


def test_stop_wakes_a_waiting_acquire(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    table.set_limit(1)
    stopping = threading.Event()
    SlotWriter(table, 0, lock_path, stopping).acquire(timeout=1)
    waiter = SlotWriter(table, 1, lock_path, stopping)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(waiter.acquire(resuming=True)))
    thread.start()
    stopping.set()
    thread.join(10)
    assert results == [False]


def test_a_killed_lock_holder_does_not_block_the_pool(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    ready_r, ready_w = os.pipe()

    def hold_forever() -> None:
        writer = SlotWriter(table, 0, lock_path, threading.Event())
        with writer._pool_lock():
            os.write(ready_w, b"x")
            signal.pause()

    pid = _fork(hold_forever)
    assert os.read(ready_r, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    assert _exit_code(pid) == -signal.SIGKILL
    assert SlotWriter(table, 1, lock_path, threading.Event()).acquire(timeout=10)
    os.close(ready_r)
    os.close(ready_w)


def test_limit_changes_are_seen_at_once(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    table.set_limit(1)
    stopping = threading.Event()
    first, second = SlotWriter(table, 0, lock_path, stopping), SlotWriter(table, 1, lock_path, stopping)
    assert first.acquire(timeout=1)
    assert not second.acquire(timeout=0.05)
    table.set_limit(2)  # TTIN
    assert table.limit() == 2
    assert second.acquire(timeout=1)


def test_leftovers_of_killed_supervisors_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    import subprocess

    from pynenc.supervisors.leftovers import sweep_stale

    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process
    shm_dir, lock_dir = tmp_path / "shm", tmp_path / "tmp"
    shm_dir.mkdir()
    lock_dir.mkdir()
    stale = [shm_dir / f"pynenc_slots_{dead.pid}_0a1b2c3d", lock_dir / f"pynenc-permits-{dead.pid}-k2j_x.lock"]
    live = [shm_dir / f"pynenc_slots_{os.getpid()}_0a1b2c3d", lock_dir / f"pynenc-permits-{os.getpid()}-abc.lock"]
    unrelated = [shm_dir / "PostgreSQL.1234", lock_dir / "pynenc-permits-notapid.lock"]
    for path in stale + live + unrelated:
        path.write_text("")
    removed = sweep_stale(str(shm_dir), str(lock_dir))
    assert sorted(removed) == sorted(p.name for p in stale)
    assert all(p.exists() for p in live + unrelated) and not any(p.exists() for p in stale)


class WatchedDoorbells(Doorbells):
    """Doorbells that say when a runner has started sleeping on one."""

    def __init__(self, fds: tuple[int, ...]) -> None:
        super().__init__(fds)
        self.sleeping = threading.Event()

    def wait(self, index: int, timeout: float) -> None:
        self.sleeping.set()
        super().wait(index, timeout)


@pytest.mark.parametrize("waiter_state", [SlotState.IDLE, SlotState.RESUMING])
def test_a_permit_given_up_rings_the_waiting_runner_awake(
    pool: tuple[SlotTable, str], monkeypatch: pytest.MonkeyPatch, waiter_state: SlotState
) -> None:
    table, lock_path = pool
    table.set_limit(1)
    monkeypatch.setattr(permits, "_MIN_BACKOFF", 60.0)  # polling alone would take a minute
    monkeypatch.setattr(permits, "_MAX_BACKOFF", 60.0)
    bells = WatchedDoorbells(Doorbells.create(8).fds)
    stopping = threading.Event()
    try:
        holder = SlotWriter(table, 0, lock_path, stopping, bells)
        waiter = SlotWriter(table, 1, lock_path, stopping, bells)
        assert holder.acquire(timeout=1)
        waiter.write(state=SlotState.IDLE)
        resuming = waiter_state is SlotState.RESUMING
        results: list[bool] = []
        thread = threading.Thread(target=lambda: results.append(waiter.acquire(resuming=resuming, timeout=120)))
        thread.start()
        assert bells.sleeping.wait(10)  # it tried, found the permit taken, and sleeps
        holder.set_paused() if resuming else holder.set_idle()
        thread.join(10)
        assert results == [True]
        assert table.state_of(1) is SlotState.RUNNING
    finally:
        stopping.set()
        bells.close()
