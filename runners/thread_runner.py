"""ThreadRunner: executes invocations in threads of the current process.

At most ``max_threads`` invocations execute at once. An invocation that waits
on others gives its slot back while it waits, and gets one again before
other new work (resuming is served first), so waiting never deadlocks the
runner however deep the waits go.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pynenc.runners.base import BaseRunner

from pynenc.context import Execution
from pynenc.models import ClaimedInvocation


class SlotPool:
    """Counts executing invocations; resuming ones take freed slots before new claims."""

    def __init__(self, size: int, stopping: threading.Event) -> None:
        self.size = size
        self.used = 0
        self.resumers = 0
        self.stopping = stopping
        self.changed = threading.Condition()

    def acquire_for_claim(self, timeout: float) -> bool:
        with self.changed:
            ok = self.changed.wait_for(
                lambda: (self.used < self.size and not self.resumers) or self.stopping.is_set(), timeout
            )
            if not ok or self.stopping.is_set():
                return False
            self.used += 1
            return True

    def acquire_for_resume(self) -> None:
        with self.changed:
            self.resumers += 1
            try:
                self.changed.wait_for(lambda: self.used < self.size or self.stopping.is_set())
                self.used += 1
            finally:
                self.resumers -= 1

    def release(self) -> None:
        with self.changed:
            self.used -= 1
            self.changed.notify_all()

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()


class ThreadRunner(BaseRunner):
    #: how long stop_runner_loop lets executing invocations finish before releasing them
    stop_grace_seconds = 1.0

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.max_threads = max(1, app.conf.max_threads)
        self.slots = SlotPool(self.max_threads, self.stopping)
        self._threads: set[threading.Thread] = set()
        self._loop_done = threading.Event()
        self._loop_done.set()

    def run(self) -> None:
        self._loop_done.clear()
        self.active = True
        self.app.active_runners.add(self)
        self.app.logger.info("runner started", runner=type(self).__name__, runner_id=self.runner_id)
        self.start_maintenance()
        orchestrator = self.app.orchestrator
        lease = self.app.conf.lease_seconds
        try:
            while not self.stopping.is_set():
                if not self.slots.acquire_for_claim(timeout=0.5):
                    continue
                try:
                    claimed = orchestrator.claim(self.runner_id, 1, lease)
                except Exception as exc:  # unreachable past its retries: keep looping, as a pool runner does
                    self.slots.release()
                    self._backend_trouble("claim failed", exc)
                    continue
                if not claimed:
                    self.slots.release()
                    try:
                        orchestrator.wait_for_work(0.5)
                    except Exception as exc:
                        self._backend_trouble("waiting for work failed", exc)
                    continue
                for item in claimed:
                    self._own(item.invocation_id)
                    self._start_thread(item)
        finally:
            self.app.active_runners.discard(self)
            self._loop_done.set()

    def _backend_trouble(self, what: str, exc: Exception) -> None:
        self.app.logger.warning(what, error=repr(exc), runner_id=self.runner_id)
        self.stopping.wait(1.0)

    def _start_thread(self, claimed: ClaimedInvocation) -> None:
        thread = threading.Thread(
            target=self._work, args=(claimed,), name=f"pynenc-{claimed.invocation_id[:8]}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _work(self, claimed: ClaimedInvocation) -> None:
        try:
            self.execute(claimed)
        except Exception as exc:  # never lose the slot because of a backend error
            self.app.logger.error(
                "runner failed to execute invocation", invocation_id=claimed.invocation_id, error=repr(exc)
            )
            if claimed.invocation_id in self.owned():  # not reported: back to the queue
                self.give_back([claimed.invocation_id], "an invocation not reported")
        finally:
            self.slots.release()
            self._threads.discard(threading.current_thread())

    def on_pause(self, execution: Execution) -> None:
        self.slots.release()

    def on_resume(self, execution: Execution) -> None:
        self.slots.acquire_for_resume()

    def stop_runner_loop(self) -> None:
        self.stopping.set()
        self.slots.wake()
        self._loop_done.wait(2.0)
        deadline = time.monotonic() + self.stop_grace_seconds
        while self.owned() and time.monotonic() < deadline:
            for thread in list(self._threads):
                thread.join(max(0.0, min(0.05, deadline - time.monotonic())))
        self.release_owned()
        self.stop_maintenance()
        self.active = False
        # A stopped runner stays stopped; the app builds a fresh one for the next run().
        self.app.forget_runner(self)
