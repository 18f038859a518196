"""The runner side of the pool: what a forked runner process does until it exits.

:func:`child_main` is called in the child right after ``fork`` and never returns (it ends
with ``os._exit``, so the child never unwinds into the supervisor's stack).  The child:

1. resets signals: SIGTERM asks for a warm stop (finish the current invocation, give back
   a paused one, exit); SIGUSR1 asks it to retire (finish what it holds, paused ones
   included, and exit when idle: used for scale-down, reload and surplus runners);
   SIGINT, SIGHUP, SIGTTIN, SIGTTOU are the supervisor's business and ignored here;
   SIGQUIT keeps its default (immediate exit);
2. asks the kernel for SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), and checks
   the parent pid as well (the signal is lost if the parent died before the ``prctl``); an
   orphaned runner gets ``graceful_timeout`` seconds, then exits hard and its invocation is
   recovered when its lease expires;
3. boots: builds the app's components (fresh connections: nothing crosses the fork) and
   touches the backend once; a failure exits with :data:`EXIT_BOOT_ERROR`, which makes the
   supervisor halt instead of forking runners that fail the same way forever;
4. serves.  Process mode (:class:`PoolRunner`): one invocation at a time, under a run
   permit (:mod:`pynenc.supervisors.permits`); the slot's heartbeat is written between
   invocations and while paused, never by the task's thread of control, so a task that
   hangs stops the heartbeat and the supervisor kills the runner after ``runner_timeout``.
   Thread mode (``MultiThreadRunner``): a :class:`ThreadRunner` loop whose slot shows one of
   its running invocations.

Every log line of the child carries ``runner_pid``; lines about an invocation carry
``task_id`` and ``invocation_id`` as well.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import psutil
from pynenc.runners.thread_runner import ThreadRunner
from pynenc.supervisors.ahead import ClaimAhead
from pynenc.supervisors.nested import NestedRunner
from pynenc.supervisors.permits import Doorbells, SlotWriter
from pynenc.supervisors.slot_table import SlotState, SlotTable

from pynenc.context import Execution
from pynenc.models import ClaimedInvocation

if TYPE_CHECKING:
    from pynenc.app import Pynenc

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BOOT_ERROR = 3
#: an orphaned runner whose invocation did not finish within the graceful timeout
EXIT_ORPHAN_TIMEOUT = 70

_PR_SET_PDEATHSIG = 1
MIB = 1024 * 1024


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a runner process needs, fixed by the supervisor before fork."""

    slot_index: int
    token: str
    supervisor_pid: int
    lock_path: str
    #: one eventfd per slot of the table (permits.Doorbells)
    doorbells: tuple[int, ...]
    wake_fd: int
    close_fds: tuple[int, ...]
    mode: str  # "process" or "threads"
    max_tasks: int
    max_memory_mib: int
    graceful_timeout: float
    heartbeat_interval: float


def runner_id_for(token: str, pid: int) -> str:
    """The runner id of a pool process; the supervisor computes it too, from the child's pid."""
    return f"{socket.gethostname()}-{pid}-{token}"


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent exits (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def child_main(app: Pynenc, table: SlotTable, spec: WorkerSpec, signal_mask: set[int | signal.Signals]) -> NoReturn:
    """The runner process, from fork to ``os._exit``; ``signal_mask`` is restored once handlers are set."""
    code = EXIT_CRASH
    try:
        code = _child(app, table, spec, signal_mask)
    except BaseException:  # nothing may escape into the supervisor's code after fork
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(spec.wake_fd, b"x")  # the supervisor reaps and replaces us at once
        except OSError:
            pass
        finally:
            os._exit(code)


def _relay_signals(actions: dict[signal.Signals, Callable[[], None]]) -> None:
    """Act on ``actions``' signals in a thread of their own, never inside a signal handler.

    A Python signal handler runs in the main thread between two bytecodes of whatever it
    was doing, possibly inside ``Event.set`` of the very event the handler sets: a second
    SIGTERM (a process group signalled, then the supervisor's warm stop) then waited
    forever on a lock its own thread held. Here the handlers do nothing; the interpreter's
    wakeup fd carries each signal number to the relay thread, which acts.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in actions:
        signal.signal(signum, _no_op_handler)
    by_number = {int(signum): action for signum, action in actions.items()}

    def relay() -> None:
        while True:
            for number in os.read(read_fd, 64):
                action = by_number.get(number)
                if action is not None:
                    action()

    threading.Thread(target=relay, name="pynenc-signals", daemon=True).start()


def _no_op_handler(signum: int, frame: FrameType | None) -> None:
    """Installed so the interpreter writes the signal to the wakeup fd (see _relay_signals)."""


def _child(app: Pynenc, table: SlotTable, spec: WorkerSpec, signal_mask: set[int | signal.Signals]) -> int:
    stopping = threading.Event()
    retire = threading.Event()
    pid = os.getpid()
    for fd in spec.close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    set_parent_death_signal(signal.SIGTERM)

    def on_term() -> None:
        stopping.set()
        if os.getppid() != spec.supervisor_pid:
            _start_orphan_timer(spec.graceful_timeout)

    _relay_signals({signal.SIGTERM: on_term, signal.SIGUSR1: retire.set})
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2 <runner>` dumps its stacks
    signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)  # signals sent meanwhile arrive now
    if os.getppid() != spec.supervisor_pid:  # the supervisor died before the prctl
        return EXIT_OK

    app._logger = app.logger.bind(runner_pid=pid)  # every line of this process names it
    log = app.logger
    writer = SlotWriter(table, spec.slot_index, spec.lock_path, stopping, Doorbells(spec.doorbells))
    writer.write(pid=pid, state=SlotState.IDLE, heartbeat=time.time(), rss_bytes=_rss())
    runner_id = runner_id_for(spec.token, pid)
    try:
        app.orchestrator.queue_depth()  # builds fresh components and proves the backend answers
    except Exception as exc:
        log.error("runner failed to boot", error=f"{type(exc).__name__}: {exc}", runner_id=runner_id)
        return EXIT_BOOT_ERROR
    log.info("runner started", runner_id=runner_id, mode=spec.mode, slot=spec.slot_index)
    if spec.mode == "threads":
        code = _serve_threads(app, writer, spec, runner_id, stopping, retire)
    else:
        runner = PoolRunner(app, writer, spec, runner_id, stopping, retire)
        beat = threading.Thread(target=_heartbeat_loop, args=(writer, spec, stopping, None), daemon=True)
        beat.start()
        code = runner.serve()
    writer.set_stopping()
    log.info("runner exiting", runner_id=runner_id, code=code)
    return code


_orphaned = threading.Event()


def _start_orphan_timer(seconds: float) -> None:
    """Exit hard ``seconds`` after learning the supervisor is gone (once, however often told)."""
    if _orphaned.is_set():
        return
    _orphaned.set()

    def expire() -> None:
        os._exit(EXIT_ORPHAN_TIMEOUT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _rss() -> int:
    try:
        return int(psutil.Process().memory_info().rss)
    except psutil.Error:
        return 0


def _heartbeat_loop(
    writer: SlotWriter, spec: WorkerSpec, stopping: threading.Event, runner: ThreadRunner | None
) -> None:
    """Heartbeat (and RSS) into the slot; never while the slot is RUNNING an invocation in
    process mode.

    In process mode a RUNNING slot's heartbeat is the moment its invocation started or
    resumed, so it ages while the task runs: that is how a hung task is found. An idle
    runner holding its permit while it waits for work (RUNNING, no invocation) runs no task:
    its heartbeat goes on, so a backend outage that keeps its wait retrying does not get it
    killed as hung.
    """
    while not stopping.wait(spec.heartbeat_interval):
        if os.getppid() != spec.supervisor_pid:  # the death signal may have been lost
            os.kill(os.getpid(), signal.SIGTERM)
        if runner is not None:
            owned = runner.owned()
            state = SlotState.RUNNING if owned else SlotState.IDLE
            writer.write(state=state, invocation_id=owned[0] if owned else "", heartbeat=time.time(), rss_bytes=_rss())
            continue
        with writer.lock:
            slot = writer.table.read(writer.index)
            if slot.state is SlotState.RUNNING and slot.invocation_id:
                writer.table.write(writer.index, rss_bytes=_rss())
            else:
                writer.table.write(writer.index, heartbeat=time.time(), rss_bytes=_rss())


class PoolRunner(NestedRunner):
    """Runs one invocation at a time in a pool process, holding a run permit while it executes.

    Its name is what ``pynenc status runners`` shows for the runner processes of a supervisor
    (or of a PersistentProcessRunner / ProcessRunner).
    """

    def __init__(
        self,
        app: Any,
        writer: SlotWriter,
        spec: WorkerSpec,
        runner_id: str,
        stopping: threading.Event,
        retire: threading.Event,
    ) -> None:
        super().__init__(app)
        self.runner_id = runner_id
        self.stopping = stopping
        self.retire = retire
        self.writer = writer
        self.spec = spec
        self.done = 0
        self._found_empty = False
        self._claim_asked = 0
        self.ahead = ClaimAhead(self, stopping)

    def run(self) -> None:
        self.serve()

    def settle_pipeline(self) -> None:
        self.ahead.settle()

    def release_owned(self) -> None:
        self.ahead.give_back()  # reads the reply in flight first: what it claimed is ours too
        super().release_owned()

    def stop_runner_loop(self) -> None:
        self.stopping.set()

    def _recycle_reason(self) -> str | None:
        if self.retire.is_set():
            return "asked to retire by the supervisor"
        if self.spec.max_tasks and self.done >= self.spec.max_tasks:
            return f"max_tasks_per_child={self.spec.max_tasks} reached"
        if self.spec.max_memory_mib and self.done:
            rss = _rss()
            if rss > self.spec.max_memory_mib * MIB:
                return f"RSS {rss // MIB} MiB above max_memory_per_child={self.spec.max_memory_mib} MiB"
        return None

    def serve(self) -> int:
        app, log = self.app, self.app.logger
        orchestrator = app.orchestrator
        self.start_maintenance()
        # Where the backend claims the moment work arrives, an idle runner waits holding its
        # permit, so the claim needs no round trip back to it (see pynenc.supervisors.permits).
        hold_while_waiting = orchestrator.claims_when_woken
        # Claimed by the previous invocation's finish, with this slot's permit still held.
        following: list[ClaimedInvocation] = []
        try:
            while not self.stopping.is_set():
                if following:
                    following = self._execute_one(following[0], switching=True)
                    continue
                if self._found_empty and not hold_while_waiting:
                    # The last finish claimed nothing: the queue was empty then, and any enqueue
                    # since left a wake marker, so block at once instead of claiming again.
                    self._found_empty = False
                    self._wait_for_work()
                    continue
                reason = self._recycle_reason()
                if reason is not None:
                    log.info("runner recycled", reason=reason, runner_id=self.runner_id)
                    break
                if not self.writer.acquire(timeout=1.0):
                    continue
                found_empty, self._found_empty = self._found_empty, False
                try:
                    claimed = [] if found_empty else orchestrator.claim(self.runner_id, 1, app.conf.lease_seconds)
                    if not claimed and hold_while_waiting:
                        # Woken by new work, a runner wanting this permit, or after a second
                        # (then the permit is given back and taken again: a stop or a retire
                        # request is seen, and a pool that shrank gets its permit back).
                        claimed = orchestrator.claim_when_woken(self.runner_id, 1, app.conf.lease_seconds, 1.0)
                        self._found_empty = not claimed
                except Exception as exc:
                    self.writer.set_idle()
                    log.warning("claim failed", error=repr(exc), runner_id=self.runner_id)
                    self.stopping.wait(1.0)
                    continue
                if not claimed:
                    self.writer.set_idle()
                    if not hold_while_waiting:
                        self._wait_for_work()
                    continue
                self._own(claimed[0].invocation_id)
                if self.stopping.is_set():  # claimed while the wait ran: given back on the way out
                    continue
                following = self._execute_one(claimed[0], switching=False)
        finally:
            self.stopping.set()  # also ends the lease thread
            try:
                self.release_owned()  # a paused or not yet started invocation goes back to the queue
            except Exception as exc:
                log.error("could not release invocations", error=repr(exc), runner_id=self.runner_id)
            self.stop_maintenance()
        return EXIT_OK

    def _wait_for_work(self) -> None:
        """Block until work may be queued (a second at most); a backend error is logged and
        waited out, as a failed claim is: the loop goes on."""
        try:
            self.app.orchestrator.wait_for_work(1.0)
        except Exception as exc:
            self.app.logger.warning("waiting for work failed", error=repr(exc), runner_id=self.runner_id)
            self.stopping.wait(1.0)

    def room_for_nested_run(self) -> bool:
        # Nested runs count toward max_tasks_per_child, and the waiting one will count too:
        # with ProcessRunner (one invocation per process) a waiting task never runs another.
        max_tasks = self.spec.max_tasks
        return not max_tasks or self.done + 2 <= max_tasks

    def claim_next_count(self) -> int:
        """One when the finish may claim the next invocation under the permit this slot holds.

        Not when the runner should stop or recycle after this invocation, and not while a
        paused invocation waits to resume (resuming ones go before new claims). Keeping the
        permit from one invocation to the next never raises the number of RUNNING slots.
        """
        self._claim_asked = 1
        if self.stopping.is_set() or self.retire.is_set():
            self._claim_asked = 0
        elif self.spec.max_tasks and self.done + 1 >= self.spec.max_tasks:
            self._claim_asked = 0
        elif self.spec.max_memory_mib and _rss() > self.spec.max_memory_mib * MIB:
            self._claim_asked = 0
        elif not self.writer.holds_permit() or self.writer.any_resuming():
            self._claim_asked = 0
        return self._claim_asked

    def _execute_one(self, claimed: ClaimedInvocation, switching: bool) -> list[ClaimedInvocation]:
        """Run one owned invocation; return the next one claimed with its finish (owned), if any.

        ``switching``: the slot is still RUNNING the previous invocation (its permit kept).
        """
        log = self.show_running(claimed, switching)
        log.debug("invocation started")
        started = self.ahead.running_since = time.monotonic()
        following: list[ClaimedInvocation] = []
        self._claim_asked = 0
        try:
            outcome = self.run_claimed(claimed, log)
            if outcome is not None:  # None: given back while stopping
                seconds = time.monotonic() - started
                self.ahead.running_since = None
                following = self.ahead.finish(claimed, outcome, self.claim_next_count(), seconds, log)
                # Claimed with the finish, yet nothing came: the queue was empty at that moment.
                self._found_empty = self._claim_asked > 0 and not following
        except Exception as exc:  # a backend error while reporting: never keep the lease alive
            log.error("invocation could not be completed", error=repr(exc))
            try:
                self.release_owned()
            except Exception as inner:
                log.error("could not release invocation", error=repr(inner))
        if claimed.invocation_id in self.owned() and not self.stopping.is_set():
            self.release_owned()
            following = []
        self.done += 1
        if not following:
            self.writer.set_idle()
        # DEBUG, not INFO: formatting and writing one line per invocation cost about a fifth
        # of a runner's CPU on no-op tasks. Failures, retries and recoveries log at INFO and
        # above; every invocation's history is in the backend (`pynenc status`).
        log.debug("invocation done", seconds=round(time.monotonic() - started, 4))
        return following

    # ----- while the task waits on other invocations ----------------------------------------
    def on_pause(self, execution: Execution) -> None:
        self.ahead.give_back()  # what is held ahead must not wait for this pause to end
        self.writer.set_paused()
        try:  # tell the supervisor now, so it forks a runner for the free permit at once
            os.write(self.spec.wake_fd, b"p")
        except OSError:
            pass

    def on_resume(self, execution: Execution) -> None:
        if not self.stopping.is_set():
            self.writer.acquire(resuming=True, wake_holders=self._wake_idle_holders)

    def _wake_idle_holders(self, count: int) -> None:
        try:
            self.app.orchestrator.wake_idle_runners(count)
        except Exception as exc:  # they give their permits back at the end of their wait anyway
            self.app.logger.warning("could not wake idle runners", error=repr(exc), runner_id=self.runner_id)


class PoolThreadRunner(ThreadRunner):
    """MultiThreadRunner's runner in a pool process: a ThreadRunner that counts what it finished."""

    def __init__(self, app: Any, spec: WorkerSpec, stop: threading.Event) -> None:
        super().__init__(app)
        self.spec = spec
        self.done = 0
        self._done_lock = threading.Lock()
        self._recycle = stop

    def execute(self, claimed: ClaimedInvocation) -> None:
        super().execute(claimed)
        with self._done_lock:
            self.done += 1
            if self.spec.max_tasks and self.done >= self.spec.max_tasks:
                self._recycle.set()


def _serve_threads(
    app: Any,
    writer: SlotWriter,
    spec: WorkerSpec,
    runner_id: str,
    stopping: threading.Event,
    retire: threading.Event,
) -> int:
    """MultiThreadRunner: a ThreadRunner loop in this process until SIGTERM or recycling."""
    runner = PoolThreadRunner(app, spec, stopping)
    runner.runner_id = runner_id
    runner.stop_grace_seconds = spec.graceful_timeout
    beat = threading.Thread(target=_heartbeat_loop, args=(writer, spec, stopping, runner), daemon=True)
    beat.start()

    def watch() -> None:
        while not stopping.wait(spec.heartbeat_interval):
            if retire.is_set():
                stopping.set()
            if spec.max_memory_mib and _rss() > spec.max_memory_mib * MIB:
                app.logger.info("runner recycled", reason="max_memory_per_child", runner_id=runner_id)
                stopping.set()
        runner.stop_runner_loop()

    stopper = threading.Thread(target=watch, daemon=True)
    stopper.start()
    runner.run()
    stopper.join()
    return EXIT_OK
