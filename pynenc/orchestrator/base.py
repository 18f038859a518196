"""The orchestrator contract: every change of an invocation's status.

The orchestrator is the only component that moves statuses. Each public write
method below is ONE atomic transition on the backend (one Lua script on Redis,
one ``BEGIN IMMEDIATE`` transaction on SQLite, one critical section in memory):
no two runners can both claim an invocation, both pass a concurrency check or
both move a status. An orchestrator works together with the broker (the queue)
and state backend (payloads, results, history) of the same backend family and
may touch their storage inside its transitions; that is what makes one call
atomic. The app refuses to mix families.

Specification of each transition (all times are ``time.time()`` seconds):

register(calls)
    For each call, in order: if ``registration_key`` is set and a QUEUED
    invocation (REGISTERED, REROUTED, RETRY, CONCURRENCY_CONTROLLED) has the same
    key, return its id with ``created=False`` (if its ``call_key`` differs and
    ``on_diff_non_key_args_raise`` is set, return an ``error`` instead and store
    nothing). Otherwise store the invocation (status REGISTERED, history entry)
    and enqueue it at priority 0 behind everything already queued.

register_ahead(call)
    ``register([call])`` for a call without ``registration_key``, whose outcome is
    known in advance (created under its own id). A backend may send it and read the
    reply later, but before any other command of the same process, so nothing the
    process does next can miss it (Redis does; the others register at once).

claim(runner_id, max_count, lease_seconds)
    Pop up to ``max_count`` runnable invocations, highest priority first, FIFO
    within a priority. For each popped one with a ``running_key`` already held by
    another EXECUTING or PAUSED invocation: if ``reroute_on_concurrency_control``
    park it as CONCURRENCY_CONTROLLED (it is re-queued as REROUTED, keeping its
    place, when the key is released) else end it CONCURRENCY_CONTROLLED_FINAL;
    both go through PENDING in the history. Every other popped one moves to
    PENDING then RUNNING, owned by ``runner_id`` with a lease expiring
    ``lease_seconds`` from now, and holds its running key.

finish(runner_id, invocation_id, outcome)
    Only if ``runner_id`` still owns the invocation (status RUNNING or RESUMED):
    store the result or error, move to SUCCESS / FAILED, or to RETRY (increment
    ``num_retries`` and re-queue at the back), release the running key (un-park
    whoever waits for it), drop the lease and wake every result waiter. Returns
    False (and changes nothing) for a runner that lost its lease.

finish_and_claim(runner_id, invocation_id, outcome, max_count, lease_seconds)
    ``finish`` then ``claim`` for the same runner, as one transition where the backend
    can (one script on Redis, so a busy runner makes one round trip per invocation).
    Returns (what finish returned, what claim returned); the claim happens even when
    the finish is rejected. The default composes the two calls.

finish_start_claim(runner_id, invocation_id, outcome, start_id, max_count, n_running, lease_seconds)
    Only where ``claims_ahead`` is True. As ``finish_and_claim``, and in the same transition:
    start ``start_id`` (an invocation this runner claimed ahead: PENDING -> RUNNING, only if
    the runner still owns it as PENDING); of the claimed ones the first ``n_running`` go
    RUNNING and the rest stay PENDING, owned, leased for at most ``max_pending_seconds``:
    claimed ahead, to be started by a later call (or given back with ``release``; recovered
    without a stall counted when the lease expires). Sends the call and returns at once; the
    returned function reads its :class:`FinishReply` (so a runner can execute the started
    invocation while the reply travels). The runner must read the reply before any other
    transition of the started invocation.

wait(runner_id, waiter_id, awaited_ids) -> bool
    Record "waiter waits for each awaited". Raises :class:`CycleDetectedError`
    (recording nothing) when an awaited invocation is the waiter itself or one
    of the invocations that wait, directly or transitively, for the waiter (its
    chain), or when its ``call_key`` equals the call key of any member of that
    chain (the same call again is infinite recursion even as a new invocation).
    When the cycle is found
    through a call key and the awaited invocation is still REGISTERED and was
    created by the waiter, it is ended FAILED with the same error so the
    recursion does not go on. Otherwise each awaited invocation that is not
    final gains one priority point per new waiter (re-ordering the queue), and
    the waiter moves RUNNING/RESUMED -> PAUSED. Returns False (no pause, nothing
    recorded) when every awaited invocation is already final.

resume(runner_id, waiter_id)
    PAUSED -> RESUMED for the owner; drops the waiter's wait edges.

renew_leases(runner_id, invocation_ids, lease_seconds) -> lost ids
    Extend the leases of the owned ones; return the ids no longer owned.

recover_expired(max_stalls) -> recovered ids
    Every owned invocation whose lease expired: PENDING -> PENDING_RECOVERY,
    RUNNING/PAUSED/RESUMED -> RUNNING_RECOVERY, its stall counter incremented,
    then REROUTED (re-queued) or, past ``max_stalls`` stalls, FAILED with a
    :class:`StalledInvocationError`. Releases its running key and wait edges.

release(runner_id, invocation_ids)
    Give unfinished work back (warm/cold shutdown): owned -> REROUTED, re-queued
    at the front of its priority, running key released. No stall is counted.

kill(invocation_id) / retry(invocation_id)
    Operator actions: any non-final -> KILLED (result waiters get
    :class:`InvocationKilledError`); FAILED, KILLED or
    CONCURRENCY_CONTROLLED_FINAL -> REROUTED.

Reads never change anything. ``wait_final`` and ``wait_for_work`` block without
busy polling (conditions, blocking pops or short backoff sleeps) and return
after at most ``timeout`` seconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from pynenc.models import (
    CallSpec,
    ClaimedInvocation,
    FinishReply,
    HelpReply,
    InvocationRecord,
    Outcome,
    RegisterOutcome,
)
from pynenc.status import FINAL, QUEUED, InvocationStatus

if TYPE_CHECKING:
    from pynenc.app import Pynenc


class BaseOrchestrator(ABC):
    #: Backend family ("mem", "redis", "sqlite"); broker and state backend must match.
    family: ClassVar[str] = ""

    def __init__(self, app: Pynenc) -> None:
        self.app = app

    # ----- transitions ---------------------------------------------------------------------
    @abstractmethod
    def register(self, calls: Sequence[CallSpec]) -> list[RegisterOutcome]: ...

    @abstractmethod
    def claim(self, runner_id: str, max_count: int, lease_seconds: float) -> list[ClaimedInvocation]: ...

    def register_later(self, calls: Sequence[CallSpec]) -> Callable[[], list[RegisterOutcome]]:
        """:meth:`register`, with its outcomes read by the function returned: a caller can
        prepare its next batch while this one is applied (call it before registering more, so
        batches are applied in order). The default registers at once."""
        outcomes = self.register(calls)
        return lambda: outcomes

    def register_ahead(self, call: CallSpec) -> None:
        """Register a call without registration key; see the contract above."""
        self.register([call])

    @abstractmethod
    def finish(self, runner_id: str, invocation_id: str, outcome: Outcome) -> bool: ...

    def finish_and_claim(
        self, runner_id: str, invocation_id: str, outcome: Outcome, max_count: int, lease_seconds: float
    ) -> tuple[bool, list[ClaimedInvocation]]:
        done = self.finish(runner_id, invocation_id, outcome)
        return done, self.claim(runner_id, max_count, lease_seconds) if max_count > 0 else []

    #: whether :meth:`finish_start_claim` (claiming ahead) is available
    claims_ahead: bool = False

    def finish_start_claim(
        self,
        runner_id: str,
        invocation_id: str,
        outcome: Outcome,
        start_id: str | None,
        max_count: int,
        n_running: int,
        lease_seconds: float,
    ) -> Callable[[], FinishReply]:
        raise NotImplementedError(f"{type(self).__name__} does not claim ahead")

    @abstractmethod
    def wait(self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str]) -> bool: ...

    def wait_and_claim(
        self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str], lease_seconds: float
    ) -> HelpReply | None:
        """:meth:`wait`, then, the waiter being PAUSED, :meth:`claim_awaited` from the awaited
        ids taken from the last (other runners pop the queue's front): one step where the
        backend can. None when nothing was recorded (:meth:`wait` returned False)."""
        if not self.wait(runner_id, waiter_id, awaited_ids):
            return None
        return self.claim_awaited(runner_id, waiter_id, list(reversed(awaited_ids)), lease_seconds)

    #: how many awaited ids one :meth:`claim_awaited` call looks through at most
    AWAITED_WINDOW = 32

    def claim_awaited(
        self,
        runner_id: str,
        waiter_id: str,
        awaited_ids: Sequence[str],
        lease_seconds: float,
        finish: tuple[str, Outcome] | None = None,
    ) -> HelpReply:
        """Help the runner's paused ``waiter_id``: finish ``finish`` (an awaited invocation the
        runner ran, with its outcome) when given, then claim, RUNNING, the first of
        ``awaited_ids`` (at most :attr:`AWAITED_WINDOW` of them) still queued; when none is and
        everything the waiter waits on is final, resume the waiter (PAUSED -> RESUMED). One
        step where the backend can.

        The runner of a task that waits runs what it waits on this way, in the task's slot,
        rather than pausing and handing the slot to another process. This default claims
        nothing and resumes nothing (the runner then pauses the waiter as usual).
        """
        done = self.finish(runner_id, *finish) if finish is not None else True
        return HelpReply(done, len(awaited_ids), [], False)

    @abstractmethod
    def resume(self, runner_id: str, waiter_id: str) -> None: ...

    @abstractmethod
    def renew_leases(self, runner_id: str, invocation_ids: Sequence[str], lease_seconds: float) -> list[str]: ...

    @abstractmethod
    def recover_expired(self, max_stalls: int) -> list[str]: ...

    @abstractmethod
    def release(self, runner_id: str, invocation_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def kill(self, invocation_id: str) -> bool: ...

    @abstractmethod
    def retry(self, invocation_id: str) -> bool: ...

    @abstractmethod
    def purge(self) -> None:
        """Remove every invocation, result, wait and queue entry of this app (and only this app)."""

    # ----- reads ---------------------------------------------------------------------------
    @abstractmethod
    def get_status(self, invocation_id: str) -> InvocationStatus | None:
        """The current status, or None when no such invocation exists."""

    @abstractmethod
    def get_record(self, invocation_id: str) -> InvocationRecord | None: ...

    def get_records(self, invocation_ids: Sequence[str]) -> list[InvocationRecord | None]:
        """The records of several invocations, in order (one round trip where the backend can)."""
        return [self.get_record(invocation_id) for invocation_id in invocation_ids]

    def wait_final_record(self, invocation_id: str, timeout: float) -> InvocationRecord | None:
        """Block until the invocation is final and return its record; None after ``timeout``
        or when no such invocation exists. (Redis reads status and result in one round trip.)"""
        if invocation_id not in self.wait_final([invocation_id], timeout):
            return None
        return self.get_record(invocation_id)

    @abstractmethod
    def wait_final(self, invocation_ids: Sequence[str], timeout: float) -> set[str]:
        """Block until at least one of the ids is final or ``timeout`` passes; return the final ones."""

    def wait_all_final(
        self, invocation_ids: Sequence[str], timeout: float, runner_id: str | None = None
    ) -> dict[str, str | None]:
        """Block until every id is final (or does not exist) or ``timeout`` passes; return the
        final ones, in the order they became final as far as the backend knows, each with its
        stored SUCCESS result when the wait learned it on the way (else None: read the record).
        It may return earlier, with some final, so callers loop over what is left (this
        default is :meth:`wait_final`; Redis waits for all in one watch, and small results
        come with its final events).

        ``runner_id``: the runner whose paused invocation waits (after :meth:`wait` recorded
        the waits); Redis then listens only to that runner's final events."""
        final = self.wait_final(invocation_ids, timeout)
        return {invocation_id: None for invocation_id in invocation_ids if invocation_id in final}

    @abstractmethod
    def wait_for_work(self, timeout: float) -> None:
        """Block until work may be claimable or ``timeout`` passes (spurious wake-ups allowed)."""

    #: whether :meth:`claim_when_woken` claims in the backend the moment work arrives (Redis):
    #: only then does an idle pool runner hold its run permit while it waits
    claims_when_woken: bool = False

    def claim_when_woken(
        self, runner_id: str, max_count: int, lease_seconds: float, timeout: float
    ) -> list[ClaimedInvocation]:
        """:meth:`wait_for_work`, then :meth:`claim`: what an idle runner does. Backends that can
        claim the moment work arrives, without a round trip back to the runner, override it
        (and set :attr:`claims_when_woken`).

        What it claims is RUNNING at once, so the caller must hold a run permit across the
        wait; a runner that wants that permit back sooner calls :meth:`wake_idle_runners`."""
        self.wait_for_work(timeout)
        return self.claim(runner_id, max_count, lease_seconds)

    def wake_idle_runners(self, count: int) -> None:
        """End up to ``count`` waits of :meth:`claim_when_woken` now, as new work would: each
        woken runner claims what is queued, or nothing (a spurious wake-up, allowed). A
        no-op where :attr:`claims_when_woken` is False (nobody holds a permit while waiting)."""

    @abstractmethod
    def iter_records(self, statuses: Iterable[InvocationStatus] | None = None) -> Iterable[InvocationRecord]:
        """Every stored invocation (optionally only in these statuses), for inspection."""

    @abstractmethod
    def status_counts(self) -> dict[InvocationStatus, int]: ...

    # ----- what `pynenc status` shows --------------------------------------------------------
    # The defaults read every record (fine for the memory backend); the SQLite and Redis
    # backends answer from indexes and counters, so an inspection costs the same with
    # millions of kept invocations as with a hundred.
    def task_status_counts(self) -> dict[str, dict[InvocationStatus, int]]:
        """Stored invocations per task id and status (statuses with none left out)."""
        return counts_by_task(self.iter_records())

    def final_count_since(self, since: float) -> int:
        """How many stored invocations reached a final status at or after ``since``."""
        return sum(1 for record in self.iter_records(FINAL) if status_since(record) >= since)

    def failed_since(self, since: float) -> dict[str, int]:
        """Per task id, stored invocations that are FAILED and failed at or after ``since``."""
        return failed_by_task(self.iter_records([InvocationStatus.FAILED]), since)

    def oldest_queued(self) -> InvocationRecord | None:
        """The queued invocation (REGISTERED, REROUTED, RETRY, CONCURRENCY_CONTROLLED) that
        entered its current status first, or None when nothing is queued."""
        return min(self.iter_records(QUEUED), key=status_since, default=None)

    @abstractmethod
    def queue_depth(self) -> int: ...

    def close(self) -> None:
        """Release connections; called by ``app.close()`` and after fork."""


def status_since(record: InvocationRecord) -> float:
    """When an invocation entered its current status (its last history entry)."""
    return record.history[-1].timestamp if record.history else record.created_at


def counts_by_task(records: Iterable[InvocationRecord]) -> dict[str, dict[InvocationStatus, int]]:
    """How many of ``records`` each task has in each status."""
    counts: dict[str, dict[InvocationStatus, int]] = {}
    for record in records:
        per_status = counts.setdefault(record.task_id, {})
        per_status[record.status] = per_status.get(record.status, 0) + 1
    return counts


def failed_by_task(records: Iterable[InvocationRecord], since: float) -> dict[str, int]:
    """Per task, how many of ``records`` are FAILED since ``since`` (a record that left FAILED,
    e.g. retried by an operator, is not counted)."""
    failed: dict[str, int] = {}
    for record in records:
        if record.status is InvocationStatus.FAILED and status_since(record) >= since:
            failed[record.task_id] = failed.get(record.task_id, 0) + 1
    return failed
