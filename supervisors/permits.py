"""Run permits: at most ``table.limit()`` slots RUNNING across every runner process.

A runner process must hold a permit to claim an invocation and while it executes one; a
permit *is* its slot being in state RUNNING, so the slot table alone tells who holds one
and nothing has to be given back when a process dies (the supervisor clears its slot).

Taking a permit reads every slot and marks one's own RUNNING under an exclusive ``flock``
of a small lock file.  The kernel drops an ``flock`` when its holder dies, so a runner
killed mid-way can never leave the pool locked (a POSIX semaphore or a
``multiprocessing.Lock`` would stay taken forever).  Each process opens the file itself:
``flock`` locks belong to an open file description, and one inherited across fork would be
shared with the parent.

Paused invocations that want to resume go first: their slot shows RESUMING and no new
claim is granted while any slot does. A waiting runner sleeps on its slot's doorbell (an
eventfd, :class:`Doorbells`); whoever gives a permit up rings the waiters' doorbells, the
RESUMING ones first, so a hand-over (on the path of every fan-in) takes microseconds. A
poll with backoff (1 ms up to 5 ms) stays underneath, so a missed ring only costs a poll
interval. Only runners with nothing to run wait here, and only while every permit is taken.

Where the backend claims for an idle runner the moment work arrives (``claims_when_woken``,
Redis), idle runners hold a permit while they wait for work: their slot shows RUNNING with
no invocation (:attr:`Slot.holds_permit_idle`). A resuming runner that finds every permit
taken wakes them through the backend (``wake_holders``); each gives its permit back unless
it claimed work.
"""

from __future__ import annotations

import fcntl
import os
import select
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pynenc.supervisors.slot_table import Slot, SlotState, SlotTable

_MIN_BACKOFF, _MAX_BACKOFF = 0.001, 0.005
#: how often a runner kept waiting for a permit wakes the idle runners holding one again
#: (one it woke may have claimed new work instead of giving its permit back)
_NUDGE_SECONDS = 0.05


LOCK_PREFIX = "pynenc-permits-"


def create_lock_file(directory: str | None = None) -> str:
    """A fresh empty lock file for one pool, named after its creator's pid.

    The supervisor deletes it when it exits; one left by a supervisor that was killed is
    removed by the next one (:func:`pynenc.supervisors.leftovers.sweep_stale`).
    """
    fd, path = tempfile.mkstemp(prefix=f"{LOCK_PREFIX}{os.getpid()}-", suffix=".lock", dir=directory)
    os.close(fd)
    return path


class Doorbells:
    """One eventfd per slot, made by the supervisor before it forks any runner (all inherit them).

    A runner waiting for a permit sleeps on its own slot's doorbell; a runner giving a permit
    up rings the doorbells of the slots that may want it (see :meth:`ring_waiters`).
    """

    def __init__(self, fds: tuple[int, ...]) -> None:
        self.fds = fds

    @classmethod
    def create(cls, count: int) -> Doorbells:
        return cls(tuple(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(count)))

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def ring_waiters(self, table: SlotTable, exclude: int = -1) -> None:
        """A permit was given up: ring every RESUMING slot (they go first), or if none, every IDLE one.

        An idle runner that is not waiting for a permit (it blocks on the queue) only finds
        its doorbell rung the next time it waits, and tries once more for nothing.
        """
        states = table.states()
        targets = [i for i, state in enumerate(states) if state == SlotState.RESUMING and i != exclude]
        if not targets:
            targets = [i for i, state in enumerate(states) if state == SlotState.IDLE and i != exclude]
        for index in targets:  # the table and the doorbells have the same number of slots
            try:
                os.eventfd_write(self.fds[index], 1)
            except OSError:  # the counter cannot overflow in practice; a lost ring is polled for
                pass

    def wait(self, index: int, timeout: float) -> None:
        """Sleep until slot ``index``'s doorbell rings or ``timeout`` passes; the ring is consumed."""
        fd = self.fds[index]
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                pass


class SlotWriter:
    """The one writer of a slot inside its runner process.

    A slot record allows one writer at a time; in a runner process the main thread and the
    heartbeat thread both write it, so every write goes through this object's lock.
    """

    def __init__(
        self,
        table: SlotTable,
        index: int,
        lock_path: str,
        stopping: threading.Event,
        doorbells: Doorbells | None = None,
    ) -> None:
        self.table = table
        self.index = index
        self.stopping = stopping
        #: None: waiting polls only (thread mode, tests)
        self.doorbells = doorbells
        self.lock = threading.Lock()
        self._fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._fd)

    # ----- plain writes -------------------------------------------------------------------
    def write(self, **changes: Any) -> Slot:
        with self.lock:
            return self.table.write(self.index, **changes)

    def read(self) -> Slot:
        with self.lock:
            return self.table.read(self.index)

    def set_running(self, invocation_id: str, task_id: str) -> None:
        with self.lock:
            self.table.set_running(self.index, invocation_id, task_id)

    def set_idle(self) -> Slot:
        """Give the permit back (leaving RUNNING with an invocation counts it done)."""
        return self._leave(self.table.set_idle)

    def _leave(self, change: Callable[[int], Slot]) -> Slot:
        """Move this slot out of its state with ``change``; if that gave a permit up, ring the
        doorbells of the runners that may be waiting for it."""
        with self.lock:
            held = self.holds_permit()
            slot = change(self.index)
        if held and self.doorbells is not None:
            self.doorbells.ring_waiters(self.table, exclude=self.index)
        return slot

    def switch_running(self, invocation_id: str, task_id: str) -> None:
        """From one invocation straight to the next while keeping the permit (RUNNING -> RUNNING);
        the one left counts as finished, as :meth:`set_idle` counts it."""
        with self.lock:
            self.table.switch_running(self.index, invocation_id, task_id)

    def holds_permit(self) -> bool:
        """Whether this slot is RUNNING (read from its state field alone: only we change it)."""
        return self.table.in_state(self.index, SlotState.RUNNING)

    def any_resuming(self) -> bool:
        """Whether a paused invocation waits for a permit (read without the pool lock: a slot
        turning RESUMING just after only waits for the next permit handed back)."""
        return self.table.any_in_state(SlotState.RESUMING)

    def set_paused(self) -> Slot:
        return self._leave(self.table.set_paused)

    def set_stopping(self) -> Slot:
        return self._leave(self.table.set_stopping)

    # ----- permits ------------------------------------------------------------------------
    @contextmanager
    def _pool_lock(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _try_take(self, resuming: bool) -> bool:
        with self.lock, self._pool_lock():
            # The state fields alone (no snapshot of whole records): this runs on every permit
            # hand-over, and only _try_take, under the pool lock, moves a slot into RUNNING.
            if not self._room(resuming):
                return False
            # Only state and heartbeat change: a resuming slot keeps its invocation fields.
            self.table.set_state(self.index, SlotState.RUNNING, time.time())
            return True

    def _room(self, resuming: bool) -> bool:
        """Fewer RUNNING slots than the limit besides this one, and, for a new claim, none
        RESUMING (resumers go first). Read under the pool lock."""
        states = self.table.states()
        states[self.index] = SlotState.EMPTY
        if states.count(SlotState.RUNNING) >= self.table.limit():
            return False
        return resuming or SlotState.RESUMING not in states

    def acquire(
        self,
        resuming: bool = False,
        timeout: float | None = None,
        wake_holders: Callable[[int], None] | None = None,
    ) -> bool:
        """Mark this slot RUNNING once fewer than the limit are; False on timeout or stop.

        ``resuming=True`` first marks the slot RESUMING so new claims wait behind it.
        ``wake_holders(n)``: called while no permit is free and ``n`` idle runners hold one
        (waiting for work in the backend, see :meth:`SlotTable.idle_holders`), at once and
        every :data:`_NUDGE_SECONDS` after, so they give theirs back instead of at the end of
        their wait.
        """
        if resuming:
            self.write(state=SlotState.RESUMING, heartbeat=time.time())
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _MIN_BACKOFF
        nudge_at = 0.0
        while True:
            if self._try_take(resuming):
                return True
            if self.stopping.is_set():
                return False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if wake_holders is not None and now >= nudge_at:
                nudge_at = now + _NUDGE_SECONDS
                holders = self.table.idle_holders()
                if holders:
                    wake_holders(holders)
            if self.doorbells is None:
                self.stopping.wait(delay)
            else:
                self.doorbells.wait(self.index, delay)
            delay = min(delay * 2, _MAX_BACKOFF)
