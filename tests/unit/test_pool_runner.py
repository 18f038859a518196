"""A pool runner's idle wait: it claims before it takes a permit, and gives back what it
cannot run because the last free permit went to another runner meanwhile."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynenc.supervisors.permits import SlotWriter, create_lock_file
from pynenc.supervisors.slot_table import SlotState, SlotTable
from pynenc.supervisors.worker import PoolRunner, WorkerSpec

from pynenc.status import InvocationStatus as S
from tests.integration.test_supervisor_tasks import wait_until
from tests.unit import unit_app


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[SlotTable, str]]:
    table = SlotTable.create(2)
    table.set_limit(1)
    try:
        yield table, create_lock_file(str(tmp_path))
    finally:
        table.close()


def test_permit_free_and_try_acquire_answer_what_acquire_would_do(pool: tuple[SlotTable, str]) -> None:
    table, lock_path = pool
    stopping = threading.Event()
    first, second = SlotWriter(table, 0, lock_path, stopping), SlotWriter(table, 1, lock_path, stopping)
    assert first.permit_free() and second.permit_free()
    assert first.try_acquire()
    assert not second.permit_free() and not second.try_acquire()
    first.set_idle()
    second.write(state=SlotState.RESUMING)  # a paused invocation waits to resume: it goes first
    assert not first.permit_free() and not first.try_acquire()
    assert second.acquire(resuming=True, timeout=1)


def test_an_invocation_claimed_when_the_last_permit_went_elsewhere_goes_back_and_runs_later(
    pool: tuple[SlotTable, str],
) -> None:
    table, lock_path = pool
    app = unit_app.app
    app.reset_components()
    stopping, retire = threading.Event(), threading.Event()
    writer, other = SlotWriter(table, 0, lock_path, stopping), SlotWriter(table, 1, lock_path, stopping)
    writer.write(pid=os.getpid(), state=SlotState.IDLE)
    spec = WorkerSpec(0, "tok", os.getpid(), lock_path, (), -1, (), "process", 0, 0, 5.0, 1.0)
    runner = PoolRunner(app, writer, spec, "pool-runner", stopping, retire)
    orchestrator = app.orchestrator
    real_claim_when_woken = orchestrator.claim_when_woken
    raced: list[str] = []
    idle = threading.Event()

    def claim_then_lose_the_permit(*args: Any) -> Any:
        idle.set()
        claimed = real_claim_when_woken(*args)
        if claimed and not raced:  # another runner takes the last permit meanwhile
            assert other.try_acquire()
            raced.append(claimed[0].invocation_id)
        return claimed

    orchestrator.claim_when_woken = claim_then_lose_the_permit  # type: ignore[method-assign]
    thread = threading.Thread(target=runner.serve, daemon=True)
    try:
        thread.start()
        assert idle.wait(10), "the runner never went idle"  # registered now, it is claimed by the wait
        invocation = unit_app.add(2, 3)
        wait_until(lambda: raced, 10, "the idle runner's claim")
        # Given back, not run: the runner now waits for a permit, holding nothing.
        wait_until(lambda: invocation.status is S.REROUTED, 10, "the invocation given back")
        assert runner.owned() == [] and table.read(0).state is SlotState.IDLE
        other.set_idle()
        assert invocation.get_result(timeout=10) == 5
        record = orchestrator.get_record(invocation.invocation_id)
        assert record is not None
        assert [h.status for h in record.history] == [
            S.REGISTERED, S.PENDING, S.RUNNING, S.REROUTED, S.PENDING, S.RUNNING, S.SUCCESS,
        ]  # fmt: skip
    finally:
        stopping.set()
        thread.join(10)
        del orchestrator.claim_when_woken
        app.reset_components()
    assert not thread.is_alive()
