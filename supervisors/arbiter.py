"""The supervisor: forks runner processes, watches them, replaces them, stops them.

It follows gunicorn's arbiter.  Signal handlers only queue the signal and wake the main
loop (a self-pipe); the loop, once per wake-up or every :data:`LOOP_SECONDS`:

1. handles queued signals: TERM/INT warm stop (a second one: cold), QUIT cold stop, HUP
   reload, TTIN/TTOU one runner more/fewer;
2. reaps exited runners (``waitpid(pid, WNOHANG)`` per runner, never ``-1``: the pool may
   live inside a process that has other children) and puts a dead runner's invocations
   back in the queue at once;
3. kills runners whose slot heartbeat is older than ``runner_timeout`` (SIGTERM, then
   SIGKILL after a grace) and retiring runners past their deadline;
4. converges the pool: ``processes`` runners plus one per runner paused for more than
   :data:`PAUSE_GRACE_SECONDS` (up to ``max_paused``; past it only when every runner is
   paused, so a fan-out never deadlocks), retiring idle surplus runners;
5. publishes a snapshot (``publish_info("supervisor", "host:pid", ...)``) and talks to
   systemd (STATUS=, WATCHDOG=1).

Dead runners' invocations: their lease is expired on the spot (``renew_leases`` with a
negative lease) and ``recover_expired`` re-queues them, counting a stall, so a poison
invocation ends FAILED after ``max_stalls``.  Invocations of runners the supervisor itself
stopped (shutdown, reload, scale down) are handed back with ``release`` (no stall).
"""

from __future__ import annotations

import collections
import faulthandler
import gc
import os
import select
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pynenc.supervisors import worker as worker_mod
from pynenc.supervisors.leftovers import sweep_stale
from pynenc.supervisors.permits import Doorbells, create_lock_file
from pynenc.supervisors.reporting import Reporter
from pynenc.supervisors.sd_notify import Notifier
from pynenc.supervisors.slot_table import Slot, SlotState, SlotTable, SlotTableFull

from pynenc.status import OWNED

LOOP_SECONDS = 0.5
#: how long surplus runners (extras whose paused peers resumed, or after TTOU) linger before retiring
SURPLUS_GRACE_SECONDS = 1.0
#: a runner paused for less than this gets no process forked for its slot: most pauses of a
#: fan-out end within milliseconds (a waiting task's runner first runs what it waits on), and
#: forking and booting a runner costs far more than that
PAUSE_GRACE_SECONDS = 0.05
#: extra slots beyond processes + max_paused, for TTIN and for runners replaced on HUP
SLOT_HEADROOM = 16

EXIT_OK = 0
EXIT_BOOT_ERROR = worker_mod.EXIT_BOOT_ERROR

FORK_BLOCKED = {
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
}

SIGNAL_NAMES = {
    signal.SIGTERM: "TERM",
    signal.SIGINT: "INT",
    signal.SIGQUIT: "QUIT",
    signal.SIGHUP: "HUP",
    signal.SIGTTIN: "TTIN",
    signal.SIGTTOU: "TTOU",
}


@dataclass
class Worker:
    pid: int
    slot: int
    runner_id: str
    spawned_at: float
    #: the supervisor asked it to stop; it is not counted in the pool any more
    retiring: bool = False
    #: SIGKILL when still alive at this time.monotonic() (None: no limit)
    retire_deadline: float | None = None
    term_sent_at: float | None = None
    timed_out: bool = False
    killed: bool = False


class Arbiter:
    """One pool of runner processes for one app.

    ``mode`` is ``"process"`` (one invocation per process, paused ones hand their permit
    over) or ``"threads"`` (each process runs a ThreadRunner).  ``reload`` returns a freshly
    imported app for HUP (None: HUP only replaces the runners).  With
    ``install_signals=False`` (runner classes inside another program) the loop is stopped
    with :meth:`request_stop` from any thread.
    """

    def __init__(
        self,
        app: Any,
        *,
        app_name: str = "",
        mode: str = "process",
        install_signals: bool = True,
        reload: Callable[[], Any] | None = None,
        max_tasks_per_child: int | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.app_name = app_name or app.app_id
        self.mode = mode
        self.install_signals = install_signals
        self.reload_app = reload
        self.processes: int = max(1, conf.processes)
        self.max_paused: int = max(0, conf.max_paused) if mode == "process" else 0
        self.max_tasks: int = conf.max_tasks_per_child if max_tasks_per_child is None else max_tasks_per_child
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.workers: dict[int, Worker] = {}
        self.signals: collections.deque[str] = collections.deque()
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code: int | None = None
        self.ready = False
        self.log = app.logger.bind(supervisor_pid=self.pid)
        self.notifier = Notifier.from_env(unset_environment=True) if install_signals else Notifier(None)
        self.reporter = Reporter(self)
        self._table_full_logged = False
        self._surplus_since: float | None = None
        #: runner pid -> (its slot's pause mark, when this loop first saw that pause), for
        #: PAUSE_GRACE_SECONDS
        self._paused_since: dict[int, tuple[float, float]] = {}
        #: monotonic time the loop must look again (a pause reaching its grace), if any
        self._look_again_at: float | None = None
        self._table: SlotTable | None = None
        self._lock_path = ""
        self._doorbells: Doorbells | None = None
        self._over_max_paused_logged = False
        self._pipes: list[int] = []
        self._old_handlers: dict[int, Any] = {}

    # ----- setup and teardown -------------------------------------------------------------
    @property
    def table(self) -> SlotTable:
        assert self._table is not None, "the pool is not started"
        return self._table

    def _capacity(self) -> int:
        return 2 * self.processes + self.max_paused + SLOT_HEADROOM

    def _setup(self) -> None:
        for name in sweep_stale():
            self.log.info("removed a leftover of a killed supervisor", name=name)
        self.app.preload()  # imported once here, shared by every runner forked from us
        # What is alive now (the app and every module) is moved out of the collector's reach:
        # a runner's collections would otherwise write into each object's header and copy
        # every page they touch out of the memory it shares with us (about 1 MiB a runner).
        gc.collect()
        gc.freeze()
        self._table = SlotTable.create(self._capacity())
        self.table.set_limit(self.processes if self.mode == "process" else self._capacity())
        self._lock_path = create_lock_file()
        self._doorbells = Doorbells.create(self._capacity())
        self._sig_r, self._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pipes = [self._sig_r, self._sig_w, self._wake_r, self._wake_w]
        if self.install_signals:
            for signum in (*SIGNAL_NAMES, signal.SIGCHLD):
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)
            faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2` dumps stacks

    def _teardown(self) -> None:
        if self._old_handlers:
            faulthandler.unregister(signal.SIGUSR2)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()
        for fd in self._pipes:
            try:
                os.close(fd)
            except OSError:
                pass
        self._pipes = []
        if self._doorbells is not None:
            self._doorbells.close()
            self._doorbells = None
        if self._table is not None:
            self._table.close()
            self._table = None
        if self._lock_path:
            try:
                os.unlink(self._lock_path)
            except OSError:
                pass
        self.notifier.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(SIGNAL_NAMES[signal.Signals(signum)])
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._sig_w, b"!")
        except OSError:  # pipe full: a wake-up is already pending
            pass

    def request_stop(self, cold: bool = False) -> None:
        """Warm (or cold) stop, from any thread."""
        self.signals.append("QUIT" if cold else "TERM")
        if self._pipes:
            self._wake()

    # ----- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the exit code (0, or 3 when a runner failed to boot)."""
        self._setup()
        try:
            self.log.info(
                "supervisor starting",
                app=self.app_name,
                processes=self.processes,
                max_paused=self.max_paused,
                mode=self.mode,
                slot_table=self.table.name,
            )
            while self.exit_code is None:
                if not self.stopping:
                    self._converge()
                self._sleep()
                self._handle_signals()
                self._reap()
                if self.exit_code is not None:
                    break
                self._murder()
                if self.stopping and not self.workers:
                    self.exit_code = EXIT_OK
                    break
                self._check_ready()
                self.reporter.publish()
        except BaseException:
            self._kill_all()
            raise
        finally:
            if self.workers:
                self._kill_all()
            self.log.info("supervisor stopped", code=self.exit_code)
            self._teardown()
        return self.exit_code if self.exit_code is not None else EXIT_OK

    def _sleep(self) -> None:
        timeout = LOOP_SECONDS
        if self._look_again_at is not None:
            timeout = min(timeout, max(0.0, self._look_again_at - time.monotonic()))
        try:
            readable, _, _ = select.select([self._sig_r, self._wake_r], [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            try:
                while os.read(fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def _handle_signals(self) -> None:
        while self.signals:
            name = self.signals.popleft()
            self.log.info("signal received", signal=name)
            if name in ("TERM", "INT"):
                if self.stopping:
                    self._cold_stop()
                else:
                    self._warm_stop()
            elif name == "QUIT":
                self._cold_stop()
            elif name == "HUP" and not self.stopping:
                self._reload()
            elif name == "TTIN" and not self.stopping:
                self._scale(self.processes + 1)
            elif name == "TTOU" and not self.stopping:
                self._scale(max(1, self.processes - 1))

    # ----- stopping -----------------------------------------------------------------------
    def _warm_stop(self) -> None:
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.app.conf.graceful_timeout
        self.notifier.stopping(f"stopping: {len(self.workers)} runners finishing their invocations")
        self.log.info("warm shutdown", graceful_timeout=self.app.conf.graceful_timeout, runners=len(self.workers))
        for worker in list(self.workers.values()):
            self._retire(worker, self.stop_deadline, signal.SIGTERM)

    def _cold_stop(self) -> None:
        self.stopping = True
        self.notifier.stopping("stopping now")
        self.log.info("cold shutdown", runners=len(self.workers))
        self._kill_all()
        self.exit_code = EXIT_OK

    def _kill_all(self) -> None:
        """SIGKILL every runner, reap it and give its invocations back."""
        for worker in self.workers.values():
            worker.killed = True
            worker.retiring = True
            _signal(worker.pid, signal.SIGKILL)
        for pid in list(self.workers):
            worker = self.workers.pop(pid)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 1 << 8
            self._after_exit(worker, status)

    def _retire(self, worker: Worker, deadline: float | None, signum: int = signal.SIGUSR1) -> None:
        """Ask a runner to exit by ``deadline`` (then SIGKILL).

        SIGUSR1 (scale down, reload, surplus): finish everything it holds, paused
        invocations included, then exit.  SIGTERM (shutdown): finish the running
        invocation, hand a paused one back, exit.
        """
        worker.retiring = True
        if deadline is not None and (worker.retire_deadline is None or deadline < worker.retire_deadline):
            worker.retire_deadline = deadline
        if signum == signal.SIGTERM or worker.term_sent_at is None:
            worker.term_sent_at = time.monotonic()
            _signal(worker.pid, signum)

    # ----- reload and scaling -------------------------------------------------------------
    def _reload(self) -> None:
        self.notifier.reloading()
        if self.reload_app is not None:
            try:
                new_app = self.reload_app()
            except Exception as exc:
                self.log.error("reload failed: keeping the running app", error=f"{type(exc).__name__}: {exc}")
                self.notifier.ready(self.reporter.status_text())
                return
            old, self.app = self.app, new_app
            self.log = new_app.logger.bind(supervisor_pid=self.pid)
            if old is not new_app:
                old.close()
        self.log.info("reloading: replacing runners", runners=len(self.workers))
        deadline = time.monotonic() + self.app.conf.graceful_timeout
        for worker in list(self.workers.values()):
            self._retire(worker, deadline)
        self.notifier.ready(self.reporter.status_text())

    def _scale(self, processes: int) -> None:
        self.processes = processes
        if self.mode == "process":
            self.table.set_limit(processes)
        self.log.info("pool resized", processes=processes)

    # ----- reaping ------------------------------------------------------------------------
    def _reap(self) -> None:
        for pid, worker in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # someone else reaped it; treat as a crash
                done, status = pid, 1 << 8
            if done == 0:
                continue
            del self.workers[pid]
            self._after_exit(worker, status)

    def _after_exit(self, worker: Worker, status: int) -> None:
        slot = self.table.read_dead(worker.slot)
        code = os.waitstatus_to_exitcode(status)
        log = self.log.bind(runner_pid=worker.pid, runner_id=worker.runner_id)
        if code < 0:
            name = signal.Signals(-code).name
            if worker.killed:
                log.info("runner killed", signal=name)
            elif -code == signal.SIGKILL:
                log.warning("runner killed by SIGKILL (perhaps out of memory)", signal=name)
            else:
                log.warning("runner killed by a signal", signal=name)
        elif code == EXIT_BOOT_ERROR and not self.stopping:
            log.error("runner failed to boot: stopping the supervisor", code=code)
            self.exit_code = EXIT_BOOT_ERROR
        elif code != 0:
            log.warning("runner exited with an error", code=code)
        else:
            log.info("runner exited", done=slot.invocations_done)
        if code != 0 or slot.state not in (SlotState.IDLE, SlotState.STOPPING, SlotState.EMPTY):
            self._requeue(worker, slot, log)
        self.table.clear(worker.slot)
        if slot.state is SlotState.RUNNING and self._doorbells is not None:
            self._doorbells.ring_waiters(self.table)  # its permit is free again

    def _requeue(self, worker: Worker, slot: Slot, log: Any) -> None:
        """Put what a dead runner owned back in the queue: released if we stopped it, else recovered."""
        orchestrator = self.app.orchestrator
        ids: set[str] = {slot.invocation_id} if slot.invocation_id else set()
        try:
            ids.update(r.invocation_id for r in orchestrator.iter_records(OWNED) if r.owner == worker.runner_id)
            if not ids:
                return
            stopped_by_us = worker.retiring and not worker.timed_out
            if stopped_by_us:
                orchestrator.release(worker.runner_id, sorted(ids))
                for invocation_id in sorted(ids):
                    log.info("invocation released", invocation_id=invocation_id, task_id=slot.task_id or None)
                return
            # Expire the dead runner's leases now: recovery counts a stall and re-queues (or fails) them.
            orchestrator.renew_leases(worker.runner_id, sorted(ids), -1.0)
            recovered = orchestrator.recover_expired(self.app.conf.max_stalls)
        except Exception as exc:
            log.error("could not re-queue the runner's invocations", error=repr(exc), invocation_ids=sorted(ids))
            return
        for invocation_id in recovered:
            status = orchestrator.get_status(invocation_id)
            log.warning(
                "invocation recovered from a dead runner",
                invocation_id=invocation_id,
                task_id=slot.task_id if invocation_id == slot.invocation_id else None,
                status=str(status),
            )

    # ----- timeouts -----------------------------------------------------------------------
    def _murder(self) -> None:
        now, mono = time.time(), time.monotonic()
        timeout = self.app.conf.runner_timeout
        grace = min(5.0, max(1.0, timeout / 2))
        for worker in list(self.workers.values()):
            if worker.killed:
                continue
            if worker.retire_deadline is not None and mono >= worker.retire_deadline:
                self.log.warning("runner did not stop in time: killing it", runner_pid=worker.pid)
                worker.killed = True
                _signal(worker.pid, signal.SIGKILL)
                continue
            slot = self.table.read(worker.slot)
            if slot.state is SlotState.EMPTY or now - slot.heartbeat <= timeout:
                continue
            if not worker.timed_out:
                worker.timed_out = True
                self.log.error(
                    "runner timed out: killing it",
                    runner_pid=worker.pid,
                    state=slot.state.name.lower(),
                    invocation_id=slot.invocation_id or None,
                    task_id=slot.task_id or None,
                    silent_seconds=round(now - slot.heartbeat, 1),
                )
                worker.retiring = True  # a replacement is forked at once
                worker.retire_deadline = min(worker.retire_deadline or mono + grace, mono + grace)
                worker.term_sent_at = mono
                _signal(worker.pid, signal.SIGTERM)

    # ----- pool size ----------------------------------------------------------------------
    def _converge(self) -> None:
        active = [w for w in self.workers.values() if not w.retiring]
        slots = {w.pid: self.table.read(w.slot) for w in active}
        paused = self._paused_long_enough(slots)
        desired = self.processes + min(paused, self.max_paused)
        if active and all(s.state is SlotState.PAUSED for s in slots.values()) and desired <= len(active):
            # Every process holds a paused invocation: nobody is left to run what they wait for.
            # max_paused yields here (a soft limit), or the pool would deadlock for good.
            desired = len(active) + 1
            if not self._over_max_paused_logged:
                self._over_max_paused_logged = True
                self.log.warning(
                    "every runner is paused: forking one beyond max_paused so the awaited work can run",
                    paused=paused,
                    max_paused=self.max_paused,
                )
        for _ in range(desired - len(active)):
            if not self._spawn():
                break
        surplus = len(active) - desired
        if surplus <= 0:
            self._surplus_since = None
            return
        # Paused runners come and go in bursts (fan-outs): keep extras for a moment rather
        # than retiring one and forking another a few milliseconds later.
        now = time.monotonic()
        if self._surplus_since is None:
            self._surplus_since = now
        if now - self._surplus_since < SURPLUS_GRACE_SECONDS:
            return
        idle = [w for w in sorted(active, key=lambda w: -w.spawned_at) if slots[w.pid].idle]
        for worker in idle[:surplus]:
            self._retire(worker, None)  # no deadline: a long invocation it took meanwhile may finish

    def _paused_long_enough(self, slots: dict[int, Slot]) -> int:
        """How many runners have been paused (or resuming) for PAUSE_GRACE_SECONDS; the loop
        is asked to look again when the next of the others reaches it."""
        now = time.monotonic()
        since: dict[int, tuple[float, float]] = {}
        for pid, slot in slots.items():
            known = self._paused_since.get(pid)
            if slot.state is SlotState.PAUSED:
                # A PAUSED slot's heartbeat is when that pause began: a new value is a new pause,
                # even when this loop never saw the runner between the two (keyed by pid alone,
                # back-to-back brief pauses added up and forked a runner).
                if known is None or known[0] != slot.heartbeat:
                    known = (slot.heartbeat, now)
                since[pid] = known
            elif slot.state is SlotState.RESUMING:
                since[pid] = known if known is not None else (slot.heartbeat, now)
        self._paused_since = since
        waiting = [at + PAUSE_GRACE_SECONDS for _, at in since.values() if now - at < PAUSE_GRACE_SECONDS]
        self._look_again_at = min(waiting) if waiting else None
        return len(since) - len(waiting)

    def _spawn(self) -> bool:
        try:
            index = self.table.claim_free_slot(0)
        except SlotTableFull:
            if not self._table_full_logged:
                self._table_full_logged = True
                self.log.warning("slot table full: cannot add a runner", slots=self.table.size)
            return False
        self._table_full_logged = False
        conf = self.app.conf
        spec = worker_mod.WorkerSpec(
            slot_index=index,
            token=uuid.uuid4().hex[:8],
            supervisor_pid=self.pid,
            lock_path=self._lock_path,
            doorbells=self._doorbells.fds if self._doorbells is not None else (),
            wake_fd=self._wake_w,
            close_fds=(self._sig_r, self._sig_w, self._wake_r),
            mode=self.mode,
            max_tasks=self.max_tasks,
            max_memory_mib=conf.max_memory_per_child,
            graceful_timeout=conf.graceful_timeout,
            heartbeat_interval=max(0.05, min(1.0, conf.runner_timeout / 4)),
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals stay blocked across fork: one sent to the new runner before it has installed
        # its own handlers must wait for them, not run the supervisor's inherited handler.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:
                worker_mod.child_main(self.app, self.table, spec, previous)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        runner_id = worker_mod.runner_id_for(spec.token, pid)
        self.workers[pid] = Worker(pid, index, runner_id, time.monotonic())
        self.log.debug("runner forked", runner_pid=pid, slot=index)
        return True

    def _check_ready(self) -> None:
        if self.ready or self.stopping:
            return
        slots = [self.table.read(w.slot) for w in self.workers.values()]
        if len(slots) >= self.processes and all(s.pid for s in slots):
            self.ready = True
            self.notifier.ready(self.reporter.status_text())
            self.log.info("supervisor ready", runners=len(slots))
            self.reporter.publish_soon()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
