"""MemOrchestrator: the transitions of :mod:`pynenc.orchestrator.base` in process memory.

One lock (the state backend's) guards records, queue, keys and waits, so each
method is one atomic transition. Conditions on that lock wake result waiters
and idle runners without polling. For tests and development: nothing is shared
between processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pynenc.broker.mem_broker import MemBroker
from pynenc.exceptions import CycleDetectedError, InvocationStatusTransitionError, StalledInvocationError
from pynenc.models import (
    CallSpec,
    ClaimedInvocation,
    HistoryEntry,
    InvocationRecord,
    Outcome,
    OutcomeKind,
    RegisterOutcome,
)
from pynenc.orchestrator.base import BaseOrchestrator
from pynenc.serializer.errors import encode_exception
from pynenc.state_backend.mem_state_backend import MemStateBackend
from pynenc.status import EXECUTING, FINAL, OWNED, QUEUED, InvocationStatus, is_allowed

S = InvocationStatus


class MemOrchestrator(BaseOrchestrator):
    family = "mem"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        state = app.state_backend
        broker = app.broker
        assert isinstance(state, MemStateBackend) and isinstance(broker, MemBroker)
        self.state = state
        self.broker = broker
        self.lock = state.lock
        self.final_changed = threading.Condition(self.lock)
        self.work_available = threading.Condition(self.lock)
        self._specs: dict[str, CallSpec] = {}
        self._registration_index: dict[str, str] = {}
        self._running_keys: dict[str, str] = {}
        self._parked: dict[str, list[str]] = {}
        self._leases: dict[str, float] = {}
        self._priority: dict[str, int] = {}

    # ----- helpers (call with the lock held) ----------------------------------------------
    def _move(self, record: InvocationRecord, status: InvocationStatus, runner_id: str | None = None) -> None:
        if record.history and not is_allowed(record.status, status):
            raise InvocationStatusTransitionError(record.invocation_id, record.status, status)
        record.status = status
        record.history.append(HistoryEntry(status, time.time(), runner_id))
        if status in FINAL:
            self.final_changed.notify_all()

    def _enqueue(self, record: InvocationRecord, front: bool = False) -> None:
        self.broker.enqueue(record.invocation_id, self._priority.get(record.invocation_id, 0), front)
        spec = self._specs[record.invocation_id]
        if spec.registration_key is not None:
            self._registration_index.setdefault(spec.registration_key, record.invocation_id)
        self.work_available.notify()

    def _unindex(self, invocation_id: str) -> None:
        spec = self._specs.get(invocation_id)
        if spec and spec.registration_key is not None:
            if self._registration_index.get(spec.registration_key) == invocation_id:
                del self._registration_index[spec.registration_key]

    def _release_key(self, invocation_id: str) -> None:
        spec = self._specs.get(invocation_id)
        if not spec or spec.running_key is None:
            return
        if self._running_keys.get(spec.running_key) != invocation_id:
            return
        del self._running_keys[spec.running_key]
        for parked_id in self._parked.pop(spec.running_key, []):
            record = self.state.records[parked_id]
            if record.status is S.CONCURRENCY_CONTROLLED:
                self._move(record, S.REROUTED)
                self._enqueue(record, front=True)

    def _drop_waits(self, record: InvocationRecord) -> None:
        for awaited_id in record.waiting_for:
            awaited = self.state.records.get(awaited_id)
            if awaited and record.invocation_id in awaited.waited_by:
                awaited.waited_by.remove(record.invocation_id)
        record.waiting_for = []

    def _owned_by(
        self, runner_id: str, invocation_id: str, statuses: Iterable[InvocationStatus]
    ) -> InvocationRecord | None:
        record = self.state.records.get(invocation_id)
        if record is None or record.owner != runner_id or record.status not in statuses:
            return None
        return record

    def _chain(self, waiter: InvocationRecord) -> list[InvocationRecord]:
        """The waiter and every invocation waiting on it, directly or transitively."""
        seen = {waiter.invocation_id}
        chain = [waiter]
        index = 0
        while index < len(chain):
            for parent_id in chain[index].waited_by:
                if parent_id not in seen and parent_id in self.state.records:
                    seen.add(parent_id)
                    chain.append(self.state.records[parent_id])
            index += 1
        return chain

    def _describe(self, record: InvocationRecord) -> tuple[str, str, str]:
        return (
            record.task_id,
            self.app.serializer.render_arguments(record.arguments, 40),
            record.invocation_id,
        )

    # ----- transitions ---------------------------------------------------------------------
    def register(self, calls: Sequence[CallSpec]) -> list[RegisterOutcome]:
        outcomes = []
        now = time.time()
        with self.lock:
            for call in calls:
                if call.registration_key is not None:
                    existing_id = self._registration_index.get(call.registration_key)
                    existing = self.state.records.get(existing_id) if existing_id else None
                    if existing is not None and existing.status in QUEUED:
                        if existing.call_key != call.call_key and call.on_diff_non_key_args_raise:
                            outcomes.append(
                                RegisterOutcome(
                                    existing.invocation_id,
                                    False,
                                    f"invocation {existing.invocation_id} of {call.task_id} has the same key "
                                    "arguments but different other arguments",
                                )
                            )
                        else:
                            outcomes.append(RegisterOutcome(existing.invocation_id, False))
                        continue
                record = InvocationRecord(
                    invocation_id=call.invocation_id,
                    task_id=call.task_id,
                    arguments=dict(call.arguments),
                    status=S.REGISTERED,
                    call_key=call.call_key,
                    parent_invocation_id=call.parent_invocation_id,
                    created_at=now,
                    history=[HistoryEntry(S.REGISTERED, now, None)],
                )
                self.state.records[call.invocation_id] = record
                self._specs[call.invocation_id] = call
                self._enqueue(record)
                outcomes.append(RegisterOutcome(call.invocation_id, True))
        return outcomes

    def claim(self, runner_id: str, max_count: int, lease_seconds: float) -> list[ClaimedInvocation]:
        claimed: list[ClaimedInvocation] = []
        with self.lock:
            while len(claimed) < max_count:
                invocation_id = self.broker.pop()
                if invocation_id is None:
                    break
                record = self.state.records[invocation_id]
                spec = self._specs[invocation_id]
                self._unindex(invocation_id)
                self._move(record, S.PENDING, runner_id)
                key = spec.running_key
                if key is not None and self._running_keys.get(key, invocation_id) != invocation_id:
                    if spec.reroute_on_concurrency_control:
                        self._move(record, S.CONCURRENCY_CONTROLLED, runner_id)
                        self._parked.setdefault(key, []).append(invocation_id)
                    else:
                        self._move(record, S.CONCURRENCY_CONTROLLED_FINAL, runner_id)
                    continue
                if key is not None:
                    self._running_keys[key] = invocation_id
                self._move(record, S.RUNNING, runner_id)
                record.owner = runner_id
                expires = time.time() + lease_seconds
                self._leases[invocation_id] = expires
                claimed.append(
                    ClaimedInvocation(
                        invocation_id, record.task_id, dict(record.arguments), record.num_retries, expires
                    )
                )
        return claimed

    def finish(self, runner_id: str, invocation_id: str, outcome: Outcome) -> bool:
        with self.lock:
            record = self._owned_by(runner_id, invocation_id, (S.RUNNING, S.RESUMED))
            if record is None:
                return False
            self._leases.pop(invocation_id, None)
            record.owner = None
            self._drop_waits(record)
            if outcome.kind is OutcomeKind.SUCCESS:
                record.result = outcome.payload
            else:
                record.error = outcome.payload
            self._release_key(invocation_id)
            if outcome.kind is OutcomeKind.RETRY:
                record.num_retries += 1
                self._move(record, S.RETRY, runner_id)
                self._enqueue(record)
            else:
                self._move(record, outcome.status, runner_id)
            return True

    def wait(self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str]) -> bool:
        with self.lock:
            waiter = self._owned_by(runner_id, waiter_id, (S.RUNNING, S.RESUMED))
            if waiter is None:
                return False
            pending = [
                self.state.records[i]
                for i in awaited_ids
                if i in self.state.records and self.state.records[i].status not in FINAL
            ]
            if not pending:
                return False
            if self.app.conf.cycle_control:
                chain = self._chain(waiter)
                chain_ids = {member.invocation_id for member in chain}
                chain_calls = {member.call_key: member for member in chain}
                for awaited in pending:
                    if awaited.invocation_id in chain_ids or awaited.call_key in chain_calls:
                        self._raise_cycle(waiter, awaited, chain, chain_calls)
            for awaited in pending:
                if awaited.invocation_id not in waiter.waiting_for:
                    waiter.waiting_for.append(awaited.invocation_id)
                    awaited.waited_by.append(waiter_id)
                    self._priority[awaited.invocation_id] = self._priority.get(awaited.invocation_id, 0) + 1
                    self.broker.add_priority(awaited.invocation_id, 1)
            self._move(waiter, S.PAUSED, runner_id)
            return True

    def _raise_cycle(
        self,
        waiter: InvocationRecord,
        awaited: InvocationRecord,
        chain: list[InvocationRecord],
        chain_calls: dict[str, InvocationRecord],
    ) -> None:
        # Report the chain from the outermost waiter down to the awaited call.
        described = [self._describe(member) for member in reversed(chain)]
        described.append(self._describe(awaited))
        error = CycleDetectedError.from_chain(described)
        if awaited.status is S.REGISTERED and awaited.parent_invocation_id == waiter.invocation_id:
            # A fresh repeat of a call already in the chain: running it would recurse forever.
            self.broker.remove(awaited.invocation_id)
            self._unindex(awaited.invocation_id)
            awaited.error = encode_exception(error)
            self._move(awaited, S.FAILED)
        raise error

    def resume(self, runner_id: str, waiter_id: str) -> None:
        with self.lock:
            record = self._owned_by(runner_id, waiter_id, (S.PAUSED,))
            if record is None:
                from pynenc.exceptions import LeaseLostError

                raise LeaseLostError(f"runner {runner_id} no longer owns paused invocation {waiter_id}")
            self._drop_waits(record)
            self._move(record, S.RESUMED, runner_id)

    def renew_leases(self, runner_id: str, invocation_ids: Sequence[str], lease_seconds: float) -> list[str]:
        lost = []
        expires = time.time() + lease_seconds
        with self.lock:
            for invocation_id in invocation_ids:
                if self._owned_by(runner_id, invocation_id, OWNED) is None:
                    lost.append(invocation_id)
                else:
                    self._leases[invocation_id] = expires
        return lost

    def recover_expired(self, max_stalls: int) -> list[str]:
        now = time.time()
        recovered = []
        with self.lock:
            for invocation_id, expires in list(self._leases.items()):
                if expires > now:
                    continue
                record = self.state.records[invocation_id]
                del self._leases[invocation_id]
                self._recover(record, max_stalls)
                recovered.append(invocation_id)
        return recovered

    def _recover(self, record: InvocationRecord, max_stalls: int) -> None:
        runner_id = record.owner
        record.owner = None
        recovery = S.PENDING_RECOVERY if record.status is S.PENDING else S.RUNNING_RECOVERY
        self._move(record, recovery, runner_id)
        record.stalls += 1
        self._drop_waits(record)
        self._release_key(record.invocation_id)
        if record.stalls > max_stalls:
            error = StalledInvocationError(
                f"invocation {record.invocation_id} of {record.task_id} lost its runner {record.stalls} times "
                f"(died or hung; max_stalls={max_stalls}), so it is not retried again"
            )
            record.error = encode_exception(error)
            self._move(record, S.FAILED)
        else:
            self._move(record, S.REROUTED)
            self._enqueue(record, front=True)

    def release(self, runner_id: str, invocation_ids: Sequence[str]) -> None:
        with self.lock:
            for invocation_id in invocation_ids:
                record = self._owned_by(runner_id, invocation_id, OWNED)
                if record is None:
                    continue
                self._leases.pop(invocation_id, None)
                record.owner = None
                self._drop_waits(record)
                self._release_key(invocation_id)
                self._move(record, S.REROUTED, runner_id)
                self._enqueue(record, front=True)

    def kill(self, invocation_id: str) -> bool:
        with self.lock:
            record = self.state.records.get(invocation_id)
            if record is None or record.status in FINAL or record.status in (S.PENDING_RECOVERY, S.RUNNING_RECOVERY):
                return False
            self.broker.remove(invocation_id)
            self._unindex(invocation_id)
            self._leases.pop(invocation_id, None)
            self._release_key(invocation_id)
            self._drop_waits(record)
            record.owner = None
            self._move(record, S.KILLED)
            return True

    def retry(self, invocation_id: str) -> bool:
        with self.lock:
            record = self.state.records.get(invocation_id)
            if record is None or record.status not in (S.FAILED, S.KILLED, S.CONCURRENCY_CONTROLLED_FINAL):
                return False
            record.error = None
            self._move(record, S.REROUTED)
            self._enqueue(record)
            return True

    def purge(self) -> None:
        with self.lock:
            self.state.records.clear()
            self.broker.purge()
            for table in (
                self._specs,
                self._registration_index,
                self._running_keys,
                self._parked,
                self._leases,
                self._priority,
            ):
                table.clear()
            self.final_changed.notify_all()

    # ----- reads ---------------------------------------------------------------------------
    def get_status(self, invocation_id: str) -> InvocationStatus | None:
        with self.lock:
            record = self.state.records.get(invocation_id)
            return record.status if record else None

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        return self.state.get_record(invocation_id)

    def wait_final(self, invocation_ids: Sequence[str], timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                done = {
                    i for i in invocation_ids if i not in self.state.records or self.state.records[i].status in FINAL
                }
                remaining = deadline - time.monotonic()
                if done or remaining <= 0:
                    return {i for i in done if i in self.state.records}
                self.final_changed.wait(remaining)

    def wait_for_work(self, timeout: float) -> None:
        with self.lock:
            if self.broker.depth() == 0:
                self.work_available.wait(timeout)

    def iter_records(self, statuses: Iterable[InvocationStatus] | None = None) -> Iterable[InvocationRecord]:
        wanted = set(statuses) if statuses is not None else None
        return [r for r in self.state.iter_records() if wanted is None or r.status in wanted]

    def status_counts(self) -> dict[InvocationStatus, int]:
        counts: dict[InvocationStatus, int] = {}
        with self.lock:
            for record in self.state.records.values():
                counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def queue_depth(self) -> int:
        with self.lock:
            return self.broker.depth()

    def executing_count(self) -> int:
        with self.lock:
            return sum(1 for r in self.state.records.values() if r.status in EXECUTING)
