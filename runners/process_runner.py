"""Runners backed by a pool of forked processes (the supervisor's machinery, in-process).

``runner_cls`` = ``PersistentProcessRunner``: ``processes`` long-lived runner processes,
each executing one invocation at a time; a waiting invocation hands its run permit to an
extra process (up to ``max_paused``), so at most ``processes`` invocations are RUNNING.

``ProcessRunner``: the same pool, but every process exits after one invocation and a fresh
one is forked (full isolation between invocations, at the cost of a fork each).

``MultiThreadRunner``: ``processes`` processes each running a ThreadRunner with
``max_threads`` threads.

``run()`` blocks the calling thread while the pool serves; ``stop_runner_loop()`` (any
thread) does a warm stop: running invocations get ``graceful_timeout`` seconds, then
whatever is left goes back to the queue.  These classes install no signal handlers; the
``pynenc-supervisor`` daemon adds signals, reload and systemd on top of the same pool.
The app must use a backend shared between processes (Redis or SQLite).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from pynenc.runners.base import BaseRunner
from pynenc.supervisors.arbiter import Arbiter


class PersistentProcessRunner(BaseRunner):
    mode: ClassVar[str] = "process"
    #: invocations per process before it is replaced (None: the max_tasks_per_child setting)
    tasks_per_process: ClassVar[int | None] = None

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._arbiter: Arbiter | None = None
        self._loop_done = threading.Event()
        self._loop_done.set()
        self.exit_code: int | None = None

    def run(self) -> None:
        from pynenc.supervisors.cli import ensure_shared_backend

        ensure_shared_backend(self.app)
        self._loop_done.clear()
        self.active = True
        self.app.active_runners.add(self)
        try:
            self._arbiter = Arbiter(
                self.app,
                mode=self.mode,
                install_signals=False,
                max_tasks_per_child=self.tasks_per_process,
            )
            if self.stopping.is_set():
                return
            self.exit_code = self._arbiter.run()
        finally:
            self.app.active_runners.discard(self)
            self.active = False
            self._loop_done.set()

    def stop_runner_loop(self) -> None:
        self.stopping.set()
        if self._arbiter is not None:
            self._arbiter.request_stop()
        self._loop_done.wait(self.app.conf.graceful_timeout + 10.0)
        # A stopped runner stays stopped; the app builds a fresh one for the next run().
        self.app.forget_runner(self)


class ProcessRunner(PersistentProcessRunner):
    tasks_per_process: ClassVar[int | None] = 1


class MultiThreadRunner(PersistentProcessRunner):
    mode: ClassVar[str] = "threads"
