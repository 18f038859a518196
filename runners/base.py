"""The runner contract: claim invocations, execute them, report how they ended.

A runner has an id unique across hosts (``host-pid-random``). It owns what it
claims until it finishes it, and keeps those leases alive from a thread of its
own (never from the task's thread, so a CPU-bound task cannot lose its lease).

``run()`` loops in the calling thread until ``stop_runner_loop()`` (callable
from any thread) asks it to stop; stopping leaves nothing RUNNING: work still
executing after the grace period is released back to the queue.

Waiting inside a task goes through :meth:`wait_for`: the waiting invocation is
recorded as PAUSED (with what it waits for). A runner that can (:meth:`run_awaited`)
then runs awaited invocations still queued itself, nested in the waiting one's slot.
For what is left, the slot is given back with :meth:`on_pause`, and once the awaited
ones are final it takes a slot again with :meth:`on_resume`; then the waiting one
continues (RESUMED).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pynenc.context import Execution, current_execution
from pynenc.exceptions import (
    LeaseLostError,
    ResultTimeoutError,
    RunnerStopped,
    SerializationError,
)
from pynenc.models import ClaimedInvocation, HelpReply, Outcome, OutcomeKind

if TYPE_CHECKING:
    from pynenc.app import Pynenc


#: Return types that are never awaitable: checked first, because inspect.isawaitable's
#: Awaitable ABC check cost a few percent of a runner's CPU per no-op task.
PLAIN_RESULT_TYPES = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict})


def new_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class BaseRunner(ABC):
    def __init__(self, app: Pynenc) -> None:
        self.app = app
        self.runner_id = new_runner_id()
        self.stopping = threading.Event()
        self._owned: set[str] = set()
        #: owned ones whose finish is under way (a renewal that finds them gone is not a loss)
        self._finishing: set[str] = set()
        self._owned_lock = threading.Lock()
        self._maintenance: threading.Thread | None = None
        self.active = False

    # ----- the loop ------------------------------------------------------------------------
    @abstractmethod
    def run(self) -> None:
        """Run until :meth:`stop_runner_loop`."""

    @abstractmethod
    def stop_runner_loop(self) -> None:
        """Ask the loop to stop; returns once nothing of ours is RUNNING."""

    # ----- slots (runners with a limit on executing invocations override these) -------------
    def on_pause(self, execution: Execution) -> None:
        """The invocation stopped executing while it waits: its slot is free."""

    def on_resume(self, execution: Execution) -> None:
        """Block until the invocation may execute again (a slot is free)."""

    # ----- ownership and leases --------------------------------------------------------------
    def owned(self) -> list[str]:
        with self._owned_lock:
            return list(self._owned)

    def _own(self, invocation_id: str) -> None:
        with self._owned_lock:
            self._owned.add(invocation_id)

    def _disown(self, invocation_id: str) -> None:
        with self._owned_lock:
            self._owned.discard(invocation_id)
            self._finishing.discard(invocation_id)

    def _mark_finishing(self, invocation_id: str) -> None:
        with self._owned_lock:
            self._finishing.add(invocation_id)

    def start_maintenance(self) -> None:
        """Renew our leases and recover expired ones, from a thread of its own."""
        self._maintenance = threading.Thread(target=self._maintain, name=f"pynenc-lease-{self.runner_id}", daemon=True)
        self._maintenance.start()

    def stop_maintenance(self, timeout: float = 2.0) -> None:
        """Stop the lease thread and let it unpublish this runner (or a stopped runner shows as dead)."""
        self.stopping.set()
        thread = self._maintenance
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _maintain(self) -> None:
        conf = self.app.conf
        renew_every = max(conf.lease_seconds / 3, 0.05)
        next_recovery = time.monotonic() + conf.recovery_interval
        started_at = time.time()
        self.publish_info(started_at)
        while not self.stopping.wait(renew_every):
            self.renew_now()
            self.publish_info(started_at)
            if time.monotonic() >= next_recovery:
                next_recovery = time.monotonic() + conf.recovery_interval
                self.recover_now()
        self.publish_info(started_at, ttl=0.0)  # stopped cleanly: gone at once, not shown as dead

    def publish_info(self, started_at: float, ttl: float | None = None) -> None:
        """Tell ``pynenc status runners`` we are alive (kind "runner"; outlives a lease so the dead show)."""
        data = {
            "runner_id": self.runner_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": started_at,
            "heartbeat": time.time(),
            "runner_cls": type(self).__name__,
        }
        try:
            keep = 4 * self.app.conf.lease_seconds if ttl is None else ttl
            self.app.state_backend.publish_info("runner", self.runner_id, data, keep)
        except Exception as exc:  # a backend hiccup must not kill the maintenance thread
            self.app.logger.warning("publishing runner info failed", runner_id=self.runner_id, error=str(exc))

    def renew_now(self) -> None:
        owned = self.owned()
        if not owned:
            return
        try:
            lost = self.app.orchestrator.renew_leases(self.runner_id, owned, self.app.conf.lease_seconds)
        except Exception as exc:  # a backend hiccup must not kill the maintenance thread
            self.app.logger.warning("lease renewal failed", runner_id=self.runner_id, error=str(exc))
            return
        for invocation_id in lost:
            with self._owned_lock:
                # Finished (or being finished) since the renewal read our list: not lost.
                if invocation_id not in self._owned or invocation_id in self._finishing:
                    continue
            self.app.logger.warning("lease lost", runner_id=self.runner_id, invocation_id=invocation_id)
            self._disown(invocation_id)

    def recover_now(self) -> list[str]:
        try:
            recovered = self.app.orchestrator.recover_expired(self.app.conf.max_stalls)
        except Exception as exc:
            self.app.logger.warning("recovery check failed", runner_id=self.runner_id, error=str(exc))
            return []
        for invocation_id in recovered:
            self.app.logger.warning("recovered invocation with expired lease", invocation_id=invocation_id)
        return recovered

    def give_back(self, invocation_ids: Sequence[str], what: str) -> None:
        """Return owned invocations to the queue (no stall counted) and stop renewing their
        leases even when the backend does not answer: what it did not take back is then
        recovered when its lease expires. ``what`` says which, in the log line of a failure."""
        if not invocation_ids:
            return
        try:
            self.app.orchestrator.release(self.runner_id, list(invocation_ids))
        except Exception as exc:
            self.app.logger.warning(
                "could not give invocations back: recovered when their leases expire",
                which=what,
                invocation_ids=list(invocation_ids),
                error=repr(exc),
            )
        for invocation_id in invocation_ids:
            self._disown(invocation_id)

    def release_owned(self) -> None:
        owned = self.owned()
        if owned:
            self.app.orchestrator.release(self.runner_id, owned)
            for invocation_id in owned:
                self._disown(invocation_id)

    # ----- executing one invocation --------------------------------------------------------
    def execute(self, claimed: ClaimedInvocation) -> None:
        """Run one claimed invocation to its end and report it (the invocation is already owned)."""
        app = self.app
        log = app.logger.bind(task_id=claimed.task_id, invocation_id=claimed.invocation_id, runner_id=self.runner_id)
        outcome = self.run_claimed(claimed, log)
        if outcome is None:  # released while stopping
            return
        self._mark_finishing(claimed.invocation_id)
        if not app.orchestrator.finish(self.runner_id, claimed.invocation_id, outcome):
            log.warning("finish rejected: this runner no longer holds the lease", outcome=outcome.kind.value)
        self._disown(claimed.invocation_id)

    def run_claimed(self, claimed: ClaimedInvocation, log: Any) -> Outcome | None:
        """Load and run the task of an owned invocation: how it ended, or None when it was
        given back because the runner is stopping (or lost its lease while paused)."""
        app = self.app
        try:
            task = app.get_task(claimed.task_id)
            arguments = {name: app.serializer.loads(payload) for name, payload in claimed.arguments.items()}
        except Exception as exc:
            log.error("cannot load invocation", error=str(exc))
            return Outcome(OutcomeKind.FAILED, self.app.serializer.dumps_error(exc))
        return self._run_task(task, claimed, arguments, log)

    def _run_task(self, task: Any, claimed: ClaimedInvocation, arguments: dict[str, Any], log: Any) -> Outcome | None:
        execution = Execution(self, claimed.invocation_id, claimed.task_id, self.app)
        token = current_execution.set(execution)
        try:
            args, kwargs = task.call_args(arguments)
            value = task.func(*args, **kwargs)
            if type(value) not in PLAIN_RESULT_TYPES and inspect.isawaitable(value):
                value = asyncio.run(_await(value))
        except RunnerStopped:
            return None
        except task.conf.retry_for as exc:
            if claimed.num_retries < task.conf.max_retries:
                log.info("retrying", error=repr(exc), retry=claimed.num_retries + 1)
                return Outcome(OutcomeKind.RETRY, self.app.serializer.dumps_error(exc))
            log.warning("failed after retries", error=repr(exc))
            return Outcome(OutcomeKind.FAILED, self.app.serializer.dumps_error(exc))
        except Exception as exc:
            log.info("task raised", error=repr(exc))
            return Outcome(OutcomeKind.FAILED, self.app.serializer.dumps_error(exc))
        finally:
            current_execution.reset(token)
        try:
            return Outcome(OutcomeKind.SUCCESS, self.app.serializer.dumps(value))
        except SerializationError as exc:
            error = SerializationError(f"{claimed.task_id}: result cannot be serialized: {exc}")
            return Outcome(OutcomeKind.FAILED, self.app.serializer.dumps_error(error))

    # ----- waiting inside a task ------------------------------------------------------------
    def settle_pipeline(self) -> None:
        """Read any transition reply still in flight (runners that pipeline their finishes):
        called before a task's own transitions, which must see them applied."""

    def may_run_awaited(self) -> bool:
        """Whether this runner runs awaited invocations inside a waiting one now (see
        :meth:`run_awaited`); runners that cannot say False and always pause."""
        return False

    def run_awaited(
        self, execution: Execution, invocation_ids: Sequence[str], first: HelpReply
    ) -> tuple[dict[str, str | None], bool]:
        """Run, in this thread, invocations ``execution`` waits on (it is PAUSED meanwhile),
        starting with what ``first`` (the reply of ``wait_and_claim``) claimed.

        Returns those run to a final end, in order, each with its SUCCESS result (else None),
        and whether the backend already resumed ``execution`` (everything it waits on was
        final). What is left is waited for by pausing (:meth:`on_pause`).
        """
        return {}, False

    def wait_for(
        self, execution: Execution, invocation_ids: Sequence[str], timeout: float | None
    ) -> dict[str, str | None]:
        """Pause ``execution`` until every id is final; return the final ids in the order they
        became final, each with its stored SUCCESS result when the wait learned it (else None),
        or ``{}`` when everything was final already (nothing learned: read the records)."""
        orchestrator = self.app.orchestrator
        self.settle_pipeline()
        # Without a timeout the runner may first run what is waited on itself (a nested run
        # cannot be cut short, so a deadline could not be kept).
        first: HelpReply | None = None
        if timeout is None and self.may_run_awaited():
            lease = self.app.conf.lease_seconds
            first = orchestrator.wait_and_claim(self.runner_id, execution.invocation_id, invocation_ids, lease)
            paused = first is not None
        else:
            paused = orchestrator.wait(self.runner_id, execution.invocation_id, invocation_ids)
        if not paused:
            if execution.invocation_id not in self.owned():
                raise RunnerStopped()
            return {}  # everything awaited is already final
        final, resumed = self.run_awaited(execution, invocation_ids, first) if first is not None else ({}, False)
        if resumed:  # everything it waits on is final: the backend resumed it with the last step
            return final
        remaining = [i for i in invocation_ids if i not in final]
        timed_out: ResultTimeoutError | None = None
        if remaining:
            self.on_pause(execution)
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                while remaining:
                    if self.stopping.is_set() or execution.invocation_id not in self.owned():
                        raise RunnerStopped()
                    left = 1.0 if deadline is None else deadline - time.monotonic()
                    if left <= 0:
                        timed_out = ResultTimeoutError(f"invocations {remaining} not final after {timeout} s")
                        break
                    final.update(orchestrator.wait_all_final(remaining, min(left, 0.5), self.runner_id))
                    remaining = [i for i in remaining if i not in final]
            finally:
                self.on_resume(execution)
        if self.stopping.is_set():
            raise RunnerStopped()
        try:
            orchestrator.resume(self.runner_id, execution.invocation_id)
        except LeaseLostError:
            raise RunnerStopped() from None
        if timed_out is not None:
            raise timed_out
        return final


async def _await(value: Any) -> Any:
    return await value
