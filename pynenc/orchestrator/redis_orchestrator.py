"""RedisOrchestrator: every transition of :mod:`pynenc.orchestrator.base` is one Lua script.

The scripts (``<name>-<number of keys>.lua`` beside this module, each with a
header listing KEYS, ARGV and return values) are called by EVALSHA through
:class:`pynenc.redis_client.RedisConnection`, which reloads them after NOSCRIPT
and retries while Redis is unreachable. Python only prepares arguments and
interprets results; the decision (who owns what, which status may follow
which) is taken inside Redis, atomically.

Blocking without polling: an idle runner BLPOPs the ``wake`` list (one marker
per enqueue) with a bounded timeout, then claims; a result waiter is woken by
the process's subscriber to the app's ``final`` channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson

from pynenc.broker.redis_broker import RedisBroker
from pynenc.exceptions import ConfigurationError, CycleDetectedError, LeaseLostError, SerializationError
from pynenc.final_waiters import FinalEvent
from pynenc.models import (
    CallSpec,
    ClaimedInvocation,
    FinishReply,
    HelpReply,
    InvocationRecord,
    Outcome,
    OutcomeKind,
    RegisterOutcome,
)
from pynenc.orchestrator.base import BaseOrchestrator
from pynenc.orchestrator.redis_census import RedisCensus
from pynenc.serializer.errors import encode_exception
from pynenc.state_backend.redis_state_backend import RedisStateBackend, state_status
from pynenc.status import EXECUTING, FINAL, InvocationStatus

log = logging.getLogger("pynenc.redis")
T = TypeVar("T")

#: Calls per register script call (bounds the time one script holds Redis).
REGISTER_BATCH = 500
#: Expired leases / expired results handled per script call.
SWEEP_BATCH = 500


class RedisOrchestrator(BaseOrchestrator):
    family = "redis"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        state, broker = app.state_backend, app.broker
        if not isinstance(state, RedisStateBackend) or not isinstance(broker, RedisBroker):
            raise ConfigurationError("RedisOrchestrator needs RedisBroker and RedisStateBackend")
        self.state = state
        self.broker = broker
        self.conn = state.conn
        self.keys = state.keys
        self.census = RedisCensus(self.conn, self.keys, state)
        self._next_expiry_sweep = 0.0

    def _run(self, script: str, *args: Any) -> Any:
        return self.state.run(script, *args)

    # ----- transitions ---------------------------------------------------------------------
    def register(self, calls: Sequence[CallSpec]) -> list[RegisterOutcome]:
        outcomes: list[RegisterOutcome] = []
        self._note_fresh(calls)
        for start in range(0, len(calls), REGISTER_BATCH):
            batch = calls[start : start + REGISTER_BATCH]
            outcomes += self._register_outcomes(batch, self._run("register", *self._register_args(batch)))
        return outcomes

    def register_later(self, calls: Sequence[CallSpec]) -> Callable[[], list[RegisterOutcome]]:
        if len(calls) > REGISTER_BATCH:
            return super().register_later(calls)
        self._note_fresh(calls)
        read = self.state.send("register", *self._register_args(calls))
        return lambda: self._register_outcomes(calls, read())

    def register_ahead(self, call: CallSpec) -> None:
        # Pipelined: Redis applies the calls in the order sent, and their replies are read
        # before this process's next command (RedisConnection.settle).
        what = f"registration of invocation {call.invocation_id} of {call.task_id}"
        self._note_fresh([call])
        self.state.send_ahead("register", what, *self._register_args([call]))

    def _note_fresh(self, calls: Sequence[CallSpec]) -> None:
        """Tell this process's final-channel subscriber, if it is up, which new invocations
        are about to be registered (FinalWatcher.note_fresh): a wait on them needs no first read."""
        watcher = self.conn.running_watcher(self.keys.final_channel)
        if watcher is not None:
            watcher.note_fresh(call.invocation_id for call in calls if call.registration_key is None)

    def _register_args(self, batch: Sequence[CallSpec]) -> list[Any]:
        now = time.time()
        args: list[Any] = [len(batch)]
        for call in batch:
            spec = {
                "task_id": call.task_id,
                "arguments": call.arguments,
                "call_key": call.call_key,
                "parent": call.parent_invocation_id,
                "created_at": now,
            }
            # cjson reads JSON null as a truthy value: leave absent what is None.
            ctl: dict[str, str | bool] = {
                "ck": call.call_key,
                "rr": call.reroute_on_concurrency_control,
                "t": call.task_id,
            }
            if call.registration_key is not None:
                ctl["rk"] = call.registration_key
            if call.running_key is not None:
                ctl["nk"] = call.running_key
            if call.parent_invocation_id is not None:
                ctl["p"] = call.parent_invocation_id
            args += [
                call.invocation_id,
                orjson.dumps(spec),
                orjson.dumps(ctl),
                "1" if call.on_diff_non_key_args_raise else "0",
                call.task_id,
            ]
        return args

    @staticmethod
    def _register_outcomes(batch: Sequence[CallSpec], flat: list[Any]) -> list[RegisterOutcome]:
        outcomes: list[RegisterOutcome] = []
        for call, invocation_id, code in zip(batch, flat[0::2], flat[1::2], strict=True):
            if code == -1:
                error = (
                    f"invocation {invocation_id} of {call.task_id} has the same key arguments but "
                    "different other arguments"
                )
                outcomes.append(RegisterOutcome(invocation_id, False, error))
            else:
                outcomes.append(RegisterOutcome(invocation_id, code == 1))
        return outcomes

    def claim(self, runner_id: str, max_count: int, lease_seconds: float) -> list[ClaimedInvocation]:
        return self._claimed(runner_id, self._run("claim", runner_id, max_count, lease_seconds), 0)

    def _claimed(self, runner_id: str, flat: list[Any], start: int) -> list[ClaimedInvocation]:
        """The invocations a claim reply lists from ``flat[start]`` (lease expiry, then triples)."""
        expires = float(flat[start])
        claimed = []
        for i in range(start + 1, len(flat), 3):
            invocation_id, spec_raw, retries = str(flat[i]), flat[i + 1], int(flat[i + 2])
            try:
                spec = orjson.loads(spec_raw)
                task_id, arguments = str(spec["task_id"]), dict(spec["arguments"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                # One corrupted invocation must not stop the runner: it ends FAILED, saying why.
                error = SerializationError(f"invocation {invocation_id}: its stored call is corrupted ({exc})")
                log.error("%s", error)
                self.finish(runner_id, invocation_id, Outcome(OutcomeKind.FAILED, encode_exception(error)))
                continue
            claimed.append(ClaimedInvocation(invocation_id, task_id, arguments, retries, expires))
        return claimed

    def finish(self, runner_id: str, invocation_id: str, outcome: Outcome) -> bool:
        done = int(self._run("finish", runner_id, invocation_id, outcome.kind.value, outcome.payload)) == 1
        return self._finish_checked(done, runner_id, invocation_id, outcome)

    def finish_and_claim(
        self, runner_id: str, invocation_id: str, outcome: Outcome, max_count: int, lease_seconds: float
    ) -> tuple[bool, list[ClaimedInvocation]]:
        reply = self.finish_start_claim(runner_id, invocation_id, outcome, None, max_count, max_count, lease_seconds)()
        return reply.done, reply.claimed

    claims_ahead = True

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
        pending_lease = min(lease_seconds, self.app.conf.max_pending_seconds)
        args = (outcome.kind.value, outcome.payload, max_count, lease_seconds, start_id or "", n_running, pending_lease)
        read = self.state.send("finish_claim", runner_id, invocation_id, *args)

        def reply() -> FinishReply:
            flat = read()
            done = self._finish_checked(int(flat[0]) == 1, runner_id, invocation_id, outcome)
            return FinishReply(done, int(flat[1]) == 1, self._claimed(runner_id, flat, 2))

        return reply

    def claim_awaited(
        self,
        runner_id: str,
        waiter_id: str,
        awaited_ids: Sequence[str],
        lease_seconds: float,
        finish: tuple[str, Outcome] | None = None,
    ) -> HelpReply:
        window = list(awaited_ids[: self.AWAITED_WINDOW])
        # Whether everything awaited is final is only asked with the last window: before it,
        # the answer is known to be "no" for whatever is still queued beyond this window.
        resumable = waiter_id if len(awaited_ids) <= self.AWAITED_WINDOW else ""
        finished_id, outcome = finish if finish is not None else ("", Outcome(OutcomeKind.SUCCESS, ""))
        flat = self._run(
            "help", runner_id, resumable, finished_id, outcome.kind.value, outcome.payload, lease_seconds, *window
        )
        done = True
        if finish is not None:
            done = self._finish_checked(int(flat[0]) == 1, runner_id, finished_id, outcome)
        return HelpReply(done, int(flat[1]), self._claimed(runner_id, flat, 3), int(flat[2]) == 1)

    def _finish_checked(self, done: bool, runner_id: str, invocation_id: str, outcome: Outcome) -> bool:
        if not done and self._finished_by(runner_id, invocation_id, outcome):
            return True  # our first attempt was applied; only its reply was lost (Redis went away)
        if not done:
            log.warning(
                "finish of invocation %s by runner %s rejected: the runner no longer holds its lease",
                invocation_id,
                runner_id,
            )
        return done

    def _finished_by(self, runner_id: str, invocation_id: str, outcome: Outcome) -> bool:
        record = self.state.get_record(invocation_id)
        if record is None or not record.history:
            return False
        last = record.history[-1]
        return last.status is outcome.status and last.runner_id == runner_id

    def wait(self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str]) -> bool:
        return int(self._wait(runner_id, waiter_id, awaited_ids, "")[0]) == 1

    def wait_and_claim(
        self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str], lease_seconds: float
    ) -> HelpReply | None:
        reply = self._wait(runner_id, waiter_id, awaited_ids, lease_seconds)
        if int(reply[0]) != 1:
            return None
        if len(reply) == 1:  # it was PAUSED already (a repeated call): nothing claimed
            return HelpReply(True, 0, [], False)
        return HelpReply(True, int(reply[1]), self._claimed(runner_id, reply, 2), False)

    def _wait(self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str], claim_lease: float | str) -> Any:
        cycle = "1" if self.app.conf.cycle_control else "0"
        reply = self._run("wait", runner_id, waiter_id, cycle, claim_lease, *awaited_ids)
        if int(reply[0]) == -10:
            self._raise_cycle(str(reply[1]), int(reply[2]) == 1, [str(i) for i in reply[3:]])
        return reply

    def _raise_cycle(self, awaited_id: str, failed_child: bool, chain: list[str]) -> None:
        records = self.state.read_records([*chain, awaited_id])
        described = [
            (
                record.task_id,
                self.app.serializer.render_arguments(record.arguments, 40),
                record.invocation_id,
            )
            if record is not None
            else ("?", "", invocation_id)
            for invocation_id, record in zip([*chain, awaited_id], records, strict=True)
        ]
        error = CycleDetectedError.from_chain(described)
        if failed_child:
            # The script already ended it FAILED with ids only; store the readable error.
            self._run("fail", awaited_id, encode_exception(error))
        raise error

    def resume(self, runner_id: str, waiter_id: str) -> None:
        if int(self._run("resume", runner_id, waiter_id)) != 1:
            raise LeaseLostError(f"runner {runner_id} no longer owns paused invocation {waiter_id}")

    def renew_leases(self, runner_id: str, invocation_ids: Sequence[str], lease_seconds: float) -> list[str]:
        if not invocation_ids:
            return []
        return [str(i) for i in self._run("renew", runner_id, lease_seconds, *invocation_ids)]

    def recover_expired(self, max_stalls: int) -> list[str]:
        recovered: list[str] = []
        while True:
            batch = [str(i) for i in self._run("recover", max_stalls, SWEEP_BATCH)]
            recovered += batch
            if len(batch) < SWEEP_BATCH:
                break
        self._maybe_expire_results()
        return recovered

    def _maybe_expire_results(self) -> None:
        """Forget final invocations older than ``result_ttl`` (at most once a minute per process)."""
        now = time.monotonic()
        if now < self._next_expiry_sweep:
            return
        self._next_expiry_sweep = now + min(60.0, max(self.app.conf.result_ttl / 4, 1.0))
        self.expire_results()

    def expire_results(self) -> int:
        removed = 0
        while True:
            count = int(self._run("expire", self.app.conf.result_ttl, SWEEP_BATCH))
            removed += count
            if count < SWEEP_BATCH:
                return removed

    def release(self, runner_id: str, invocation_ids: Sequence[str]) -> None:
        if invocation_ids:
            self._run("release", runner_id, *invocation_ids)

    def kill(self, invocation_id: str) -> bool:
        return int(self._run("kill", invocation_id)) == 1

    def retry(self, invocation_id: str) -> bool:
        return int(self._run("retry", invocation_id)) == 1

    def fail_queued(self, invocation_id: str, error: BaseException) -> bool:
        """End a not yet claimed invocation FAILED with ``error`` (False if it was claimed or final)."""
        return int(self._run("fail", invocation_id, encode_exception(error))) == 1

    def purge(self) -> None:
        self.state.purge()

    # ----- reads ---------------------------------------------------------------------------
    def get_status(self, invocation_id: str) -> InvocationStatus | None:
        status = state_status(self.conn.command("HGET", self.keys.state, invocation_id))
        return InvocationStatus(status) if status else None

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        return self.state.get_record(invocation_id)

    def get_records(self, invocation_ids: Sequence[str]) -> list[InvocationRecord | None]:
        return self.state.read_records(invocation_ids)

    def _final_among(self, invocation_ids: list[str]) -> tuple[set[str], set[str]]:
        """(final ids, ids that do not exist)."""
        statuses = [state_status(raw) for raw in self.conn.command("HMGET", self.keys.state, *invocation_ids)]
        final = {i for i, s in zip(invocation_ids, statuses, strict=True) if s and InvocationStatus(s) in FINAL}
        missing = {i for i, s in zip(invocation_ids, statuses, strict=True) if not s}
        return final, missing

    def _look_final(self, event: FinalEvent, published: set[str], ids: list[str]) -> tuple[set[str], set[str]]:
        """(final, missing) among ``ids``, reading as few statuses as the events allow.

        A small SUCCESS result comes with its final event and SUCCESS is never left, so those
        ids are final without a read. Other published ids are read; every id is read when
        nothing was published (the first look, a timeout, or a wake after the subscriber
        reconnected, when events may have been missed).
        """
        final = {i for i in ids if i in event.results}
        to_read = [i for i in ids if i not in final and (not published or i in published)]
        if not to_read:
            return final, set()
        found, missing = self._final_among(to_read)
        return final | found, missing

    def wait_final(self, invocation_ids: Sequence[str], timeout: float) -> set[str]:
        ids = list(invocation_ids)
        if not ids:
            return set()

        def look(event: FinalEvent, published: set[str]) -> tuple[bool, set[str]]:
            final, missing = self._look_final(event, published, ids)
            return bool(final or missing), final

        return self._watching(ids, timeout, look)

    def wait_all_final(
        self, invocation_ids: Sequence[str], timeout: float, runner_id: str | None = None
    ) -> dict[str, str | None]:
        ids = list(invocation_ids)
        if not ids:
            return {}
        # A runner's paused invocation listens on the runner's own channel, where the scripts
        # publish the final events of what it waits on (recorded by the wait script), instead
        # of receiving every final event of the app in every paused runner.
        channel = self.keys.final_channel if runner_id is None else self.keys.runner_final_channel(runner_id)
        watcher = self.conn.watcher(channel)
        final: dict[str, str | None] = {}
        missing: set[str] = set()
        seen = 0  # how many of the event's arrivals are ordered into final already

        def look(event: FinalEvent, published: set[str]) -> tuple[bool, dict[str, str | None]]:
            # One watch for the whole wait; each look only considers the ids not settled yet.
            nonlocal seen
            unsettled = [i for i in ids if i not in final and i not in missing]
            found, gone = self._look_final(event, published, unsettled)
            missing.update(gone)
            # In the order they were published (the order they finished); ids found final
            # by a read without an event (the first look) come first, in the order given.
            arrivals = event.arrivals[seen:]
            seen += len(arrivals)
            arrived = set(arrivals)
            for invocation_id in [i for i in unsettled if i in found and i not in arrived] + arrivals:
                if invocation_id in found and invocation_id not in final:
                    final[invocation_id] = event.results.get(invocation_id)
            left = len(ids) - len(final) - len(missing)
            watcher.expect(event, left)  # no wake-up before every id left was published
            return left <= 0, dict(final)

        return self._watching(ids, timeout, look, channel)

    def wait_final_record(self, invocation_id: str, timeout: float) -> InvocationRecord | None:
        # Reading the whole record each time (one script call): once it is final, the caller
        # has its result without another round trip. A small SUCCESS result comes with its
        # final event: then the record holds status and result only, and nothing is read.
        def look(event: FinalEvent, _published: set[str]) -> tuple[bool, InvocationRecord | None]:
            result = event.results.get(invocation_id)
            if result is not None:
                return True, InvocationRecord(invocation_id, "", {}, InvocationStatus.SUCCESS, result=result)
            record = self.state.get_record(invocation_id)
            if record is None or record.status in FINAL:
                return True, record
            return False, None

        return self._watching([invocation_id], timeout, look)

    def _watching(
        self,
        ids: list[str],
        timeout: float,
        look: Callable[[FinalEvent, set[str]], tuple[bool, T]],
        channel: str | None = None,
    ) -> T:
        """Call ``look`` until it says done or ``timeout`` passes, woken between looks by the
        final channel when one of ``ids`` is published; returns what the last look found.

        ``look`` gets the event and the ids published since the last look (none at first).
        A message only says "look": it can be stale (published before we watched, delivered
        late, for an invocation an operator has retried since), so ``look`` decides. Taking
        the messages re-arms the event.
        """
        deadline = time.monotonic() + timeout
        watcher = self.conn.watcher(channel or self.keys.final_channel)
        event = watcher.watch(ids)
        try:
            if watcher.known_pending(ids):
                # Registered here under the subscription still up, and not published since: not
                # final yet, so a first look would find nothing; wait for an event before it.
                watcher.wait(event, timeout)
            while True:
                published = watcher.take_published(event)
                done, found = look(event, published)
                remaining = deadline - time.monotonic()
                if done or remaining <= 0:
                    return found
                watcher.wait(event, remaining)
        finally:
            watcher.unwatch(ids, event)

    def wait_for_work(self, timeout: float) -> None:
        seconds = _blpop_seconds(timeout)
        self.conn.call(lambda client: client.blpop([self.keys.wake], timeout=seconds))

    claims_when_woken = True

    def claim_when_woken(
        self, runner_id: str, max_count: int, lease_seconds: float, timeout: float
    ) -> list[ClaimedInvocation]:
        # BLPOP and the claim in one write: the claim runs in Redis as soon as a wake marker
        # arrives (or the wait times out), and the runner wakes once, with what it claimed.
        blpop = ("BLPOP", self.keys.wake, _blpop_seconds(timeout))
        flat = self.state.send("claim", runner_id, max_count, lease_seconds, after=blpop)()
        return self._claimed(runner_id, flat, 0)

    def wake_idle_runners(self, count: int) -> None:
        # The capped markers new work leaves: BLPOP serves the longest waiting runner first; a
        # marker nobody takes only wakes a later wait once.
        if count > 0:
            self._run("wake", count)

    # ----- inspection (pynenc.orchestrator.redis_census) ---------------------------------------
    def iter_records(self, statuses: Iterable[InvocationStatus] | None = None) -> Iterable[InvocationRecord]:
        return self.census.iter_records(statuses)

    def status_counts(self) -> dict[InvocationStatus, int]:
        return self.census.status_counts()

    def task_status_counts(self) -> dict[str, dict[InvocationStatus, int]]:
        return self.census.task_status_counts()

    def final_count_since(self, since: float) -> int:
        return self.census.final_count_since(since)

    def failed_since(self, since: float) -> dict[str, int]:
        return self.census.failed_since(since)

    def oldest_queued(self) -> InvocationRecord | None:
        return self.census.oldest_queued()

    def queue_depth(self) -> int:
        return self.broker.depth()

    def executing_count(self) -> int:
        counts = self.status_counts()
        return sum(counts.get(status, 0) for status in EXECUTING)

    def close(self) -> None:
        self.conn.close()


def _blpop_seconds(timeout: float) -> float:
    """A BLPOP timeout: whole or fractional seconds, never 0 (which would block forever)."""
    return max(round(timeout, 3), 0.001)
