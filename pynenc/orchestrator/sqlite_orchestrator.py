"""SQLiteOrchestrator: the transitions of :mod:`pynenc.orchestrator.base` on one SQLite file.

Every public write method is ONE ``BEGIN IMMEDIATE`` transaction (the SQL
counterpart of the Redis Lua scripts): the write lock is taken before anything
is read, so two processes can never both claim an invocation, both take a
running key or both move a status. Every status change is also checked
against :data:`pynenc.status.TRANSITIONS` in its UPDATE; a change the table does
not allow raises InvocationStatusTransitionError and rolls the transition back.
The semantics follow :class:`~pynenc.orchestrator.mem_orchestrator.MemOrchestrator`.

Storage (see :mod:`pynenc.sqlite_schema`), all rows scoped by ``app_id``:

* ``invocations``: one row per invocation. It is queued while ``seq`` is not
  NULL (claim order: ``priority DESC, seq``); ``reg_indexed = 1`` marks the one
  queued invocation a ``registration_key`` resolves to; ``owner`` and
  ``lease_expires`` are set while a runner owns it; ``parked_key`` is set while
  it is CONCURRENCY_CONTROLLED, waiting for that running key.
* ``running_keys``: key -> the EXECUTING/PAUSED invocation holding it.
* ``waits``: waiter -> awaited edges (a waiter's edges go when it resumes, ends
  or loses its runner).
* ``history``: every status an invocation went through.

Final invocations older than ``result_ttl`` are deleted during
:meth:`recover_expired`, which runners call periodically.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from pynenc import sqlite_store as db
from pynenc.exceptions import (
    CycleDetectedError,
    InvocationStatusTransitionError,
    LeaseLostError,
    StalledInvocationError,
)
from pynenc.models import CallSpec, ClaimedInvocation, Outcome, OutcomeKind, RegisterOutcome
from pynenc.orchestrator.base import BaseOrchestrator
from pynenc.orchestrator.sqlite_reads import SQLiteReads, marks
from pynenc.serializer.errors import encode_exception
from pynenc.sqlite_store import SQLiteStore
from pynenc.status import FINAL, OWNED, TRANSITIONS, InvocationStatus

S = InvocationStatus
Row = sqlite3.Row

_OWNED = tuple(s.value for s in OWNED)
_FINAL = tuple(s.value for s in FINAL)
#: for each status, the statuses the transition table allows moving to it from
_SOURCES = {new: tuple(src.value for src, targets in TRANSITIONS.items() if new in targets) for new in S}


class SQLiteOrchestrator(SQLiteReads, BaseOrchestrator):
    family = "sqlite"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        state = app.state_backend
        from pynenc.state_backend.sqlite_state_backend import SQLiteStateBackend

        if not isinstance(state, SQLiteStateBackend):  # the app checks families; this keeps mypy honest
            raise TypeError("SQLiteOrchestrator needs the SQLiteStateBackend")
        self.store: SQLiteStore = state.store
        self.app_id = self.store.app_id
        #: per thread: see SQLiteReads.wait_final
        self._local = threading.local()

    # ----- helpers (call inside a transaction) ---------------------------------------------
    def _row(self, conn: sqlite3.Connection, invocation_id: str) -> Row | None:
        row: Row | None = conn.execute(
            "SELECT * FROM invocations WHERE app_id = ? AND id = ?", (self.app_id, invocation_id)
        ).fetchone()
        return row

    def _owned_row(
        self, conn: sqlite3.Connection, runner_id: str, invocation_id: str, statuses: Iterable[str]
    ) -> Row | None:
        row = self._row(conn, invocation_id)
        if row is None or row["owner"] != runner_id or row["status"] not in set(statuses):
            return None
        return row

    def _move(
        self, conn: sqlite3.Connection, invocation_id: str, status: InvocationStatus, runner_id: str | None = None
    ) -> None:
        now = time.time()
        final = status in FINAL
        final_seq = db.next_counter(conn, self.app_id, "final", 1) if final else None
        sources = _SOURCES[status]
        moved = conn.execute(
            "UPDATE invocations SET status = ?, finished_at = ?, final_seq = ? WHERE app_id = ? AND id = ? "
            f"AND status IN ({marks(sources)})",
            (status.value, now if final else None, final_seq, self.app_id, invocation_id, *sources),
        ).rowcount
        if not moved:  # the transition table forbids it: the whole transaction is rolled back
            row = self._row(conn, invocation_id)
            current = row["status"] if row is not None else "(no such invocation)"
            raise InvocationStatusTransitionError(invocation_id, current, status, "not in the transition table")
        conn.execute(
            "INSERT INTO history (app_id, id, status, ts, runner) VALUES (?, ?, ?, ?, ?)",
            (self.app_id, invocation_id, status.value, now, runner_id),
        )
        if final:
            self.store.notify(final=True)

    def _disown(self, conn: sqlite3.Connection, invocation_id: str) -> None:
        conn.execute(
            "UPDATE invocations SET owner = NULL, lease_expires = NULL WHERE app_id = ? AND id = ?",
            (self.app_id, invocation_id),
        )

    def _enqueue(self, conn: sqlite3.Connection, invocation_id: str, front: bool = False) -> None:
        """Queue it at its accumulated priority; it becomes the target of its registration key if free."""
        db.enqueue(conn, self.app_id, invocation_id, None, front)
        conn.execute(
            "UPDATE invocations SET reg_indexed = 1 WHERE app_id = ?1 AND id = ?2 AND registration_key IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM invocations o WHERE o.app_id = ?1 AND o.reg_indexed = 1 "
            "AND o.registration_key = invocations.registration_key AND o.id != invocations.id)",
            (self.app_id, invocation_id),
        )
        self.store.notify(work=True)

    def _dequeue(self, conn: sqlite3.Connection, invocation_id: str) -> None:
        conn.execute(
            "UPDATE invocations SET seq = NULL, reg_indexed = 0 WHERE app_id = ? AND id = ?",
            (self.app_id, invocation_id),
        )

    def _release_key(self, conn: sqlite3.Connection, row: Row) -> None:
        """Free the running key ``row`` holds and re-queue whoever was parked waiting for it."""
        key = row["running_key"]
        if key is None:
            return
        deleted = conn.execute(
            "DELETE FROM running_keys WHERE app_id = ? AND key = ? AND holder = ?", (self.app_id, key, row["id"])
        ).rowcount
        if not deleted:
            return
        parked = conn.execute(
            "SELECT id, status FROM invocations WHERE app_id = ? AND parked_key = ? ORDER BY parked_seq DESC",
            (self.app_id, key),
        ).fetchall()
        conn.execute(
            "UPDATE invocations SET parked_key = NULL, parked_seq = NULL WHERE app_id = ? AND parked_key = ?",
            (self.app_id, key),
        )
        # newest first, each to the front: the oldest parked one ends up first in line
        for parked_id, status in parked:
            if status == S.CONCURRENCY_CONTROLLED.value:
                self._move(conn, parked_id, S.REROUTED)
                self._enqueue(conn, parked_id, front=True)

    def _drop_waits(self, conn: sqlite3.Connection, waiter_id: str) -> None:
        conn.execute("DELETE FROM waits WHERE app_id = ? AND waiter = ?", (self.app_id, waiter_id))

    def _chain(self, conn: sqlite3.Connection, waiter: Row) -> list[Row]:
        """The waiter and every invocation waiting on it, directly or transitively."""
        seen = {waiter["id"]}
        chain = [waiter]
        index = 0
        while index < len(chain):
            for (parent_id,) in conn.execute(
                "SELECT waiter FROM waits WHERE app_id = ? AND awaited = ? ORDER BY seq",
                (self.app_id, chain[index]["id"]),
            ).fetchall():
                if parent_id not in seen:
                    seen.add(parent_id)
                    parent = self._row(conn, parent_id)
                    if parent is not None:
                        chain.append(parent)
            index += 1
        return chain

    def _describe(self, row: Row) -> tuple[str, str, str]:
        arguments = self.app.serializer.render_arguments(orjson.loads(row["arguments"]), 40)
        return (row["task_id"], arguments, row["id"])

    # ----- transitions ---------------------------------------------------------------------
    def register(self, calls: Sequence[CallSpec]) -> list[RegisterOutcome]:
        outcomes = []
        now = time.time()
        with self.store.transaction() as conn:
            for call in calls:
                if call.registration_key is not None:
                    existing = conn.execute(
                        "SELECT id, status, call_key FROM invocations "
                        "WHERE app_id = ? AND registration_key = ? AND reg_indexed = 1",
                        (self.app_id, call.registration_key),
                    ).fetchone()
                    if existing is not None and S(existing["status"]).is_queued:
                        error = None
                        if existing["call_key"] != call.call_key and call.on_diff_non_key_args_raise:
                            error = (
                                f"invocation {existing['id']} of {call.task_id} has the same key "
                                "arguments but different other arguments"
                            )
                        outcomes.append(RegisterOutcome(existing["id"], False, error))
                        continue
                conn.execute(
                    "INSERT INTO invocations (app_id, id, task_id, arguments, status, call_key, registration_key, "
                    "running_key, reroute, diff_raise, parent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.app_id,
                        call.invocation_id,
                        call.task_id,
                        orjson.dumps(call.arguments).decode(),
                        S.REGISTERED.value,
                        call.call_key,
                        call.registration_key,
                        call.running_key,
                        int(call.reroute_on_concurrency_control),
                        int(call.on_diff_non_key_args_raise),
                        call.parent_invocation_id,
                        now,
                    ),
                )
                conn.execute(
                    "INSERT INTO history (app_id, id, status, ts, runner) VALUES (?, ?, ?, ?, NULL)",
                    (self.app_id, call.invocation_id, S.REGISTERED.value, now),
                )
                self._enqueue(conn, call.invocation_id)
                outcomes.append(RegisterOutcome(call.invocation_id, True))
        return outcomes

    def claim(self, runner_id: str, max_count: int, lease_seconds: float) -> list[ClaimedInvocation]:
        claimed: list[ClaimedInvocation] = []
        with self.store.transaction() as conn:
            while len(claimed) < max_count:
                row = conn.execute(
                    "SELECT * FROM invocations WHERE app_id = ? AND seq IS NOT NULL ORDER BY priority DESC, seq "
                    "LIMIT 1",
                    (self.app_id,),
                ).fetchone()
                if row is None:
                    break
                invocation_id = row["id"]
                self._dequeue(conn, invocation_id)
                self._move(conn, invocation_id, S.PENDING, runner_id)
                key = row["running_key"]
                if key is not None:
                    holder = conn.execute(
                        "SELECT holder FROM running_keys WHERE app_id = ? AND key = ?", (self.app_id, key)
                    ).fetchone()
                    if holder is not None and holder[0] != invocation_id:
                        if row["reroute"]:
                            self._move(conn, invocation_id, S.CONCURRENCY_CONTROLLED, runner_id)
                            conn.execute(
                                "UPDATE invocations SET parked_key = ?, parked_seq = ? WHERE app_id = ? AND id = ?",
                                (key, db.next_counter(conn, self.app_id, "parked", 1), self.app_id, invocation_id),
                            )
                        else:
                            self._move(conn, invocation_id, S.CONCURRENCY_CONTROLLED_FINAL, runner_id)
                        continue
                    conn.execute(
                        "INSERT OR REPLACE INTO running_keys (app_id, key, holder) VALUES (?, ?, ?)",
                        (self.app_id, key, invocation_id),
                    )
                self._move(conn, invocation_id, S.RUNNING, runner_id)
                expires = time.time() + lease_seconds
                conn.execute(
                    "UPDATE invocations SET owner = ?, lease_expires = ? WHERE app_id = ? AND id = ?",
                    (runner_id, expires, self.app_id, invocation_id),
                )
                claimed.append(
                    ClaimedInvocation(
                        invocation_id, row["task_id"], orjson.loads(row["arguments"]), row["num_retries"], expires
                    )
                )
        return claimed

    def finish(self, runner_id: str, invocation_id: str, outcome: Outcome) -> bool:
        with self.store.transaction() as conn:
            row = self._owned_row(conn, runner_id, invocation_id, (S.RUNNING.value, S.RESUMED.value))
            if row is None:
                return False
            self._disown(conn, invocation_id)
            self._drop_waits(conn, invocation_id)
            column = "result" if outcome.kind is OutcomeKind.SUCCESS else "error"
            conn.execute(
                f"UPDATE invocations SET {column} = ? WHERE app_id = ? AND id = ?",
                (outcome.payload, self.app_id, invocation_id),
            )
            self._release_key(conn, row)
            if outcome.kind is OutcomeKind.RETRY:
                conn.execute(
                    "UPDATE invocations SET num_retries = num_retries + 1 WHERE app_id = ? AND id = ?",
                    (self.app_id, invocation_id),
                )
                self._move(conn, invocation_id, S.RETRY, runner_id)
                self._enqueue(conn, invocation_id)
            else:
                self._move(conn, invocation_id, outcome.status, runner_id)
            return True

    def wait(self, runner_id: str, waiter_id: str, awaited_ids: Sequence[str]) -> bool:
        cycle: CycleDetectedError | None = None
        with self.store.transaction() as conn:
            waiter = self._owned_row(conn, runner_id, waiter_id, (S.RUNNING.value, S.RESUMED.value))
            if waiter is None:
                return False
            pending = [row for row in (self._row(conn, i) for i in dict.fromkeys(awaited_ids)) if row is not None]
            pending = [row for row in pending if row["status"] not in _FINAL]
            if not pending:
                return False
            if self.app.conf.cycle_control:
                chain = self._chain(conn, waiter)
                chain_ids = {member["id"] for member in chain}
                chain_calls = {member["call_key"] for member in chain}
                for awaited in pending:
                    if awaited["id"] in chain_ids or awaited["call_key"] in chain_calls:
                        cycle = self._cycle(conn, waiter, awaited, chain)
                        break
            if cycle is None:
                for awaited in pending:
                    added = conn.execute(
                        "INSERT OR IGNORE INTO waits (app_id, waiter, awaited) VALUES (?, ?, ?)",
                        (self.app_id, waiter_id, awaited["id"]),
                    ).rowcount
                    if added:
                        conn.execute(
                            "UPDATE invocations SET priority = priority + 1 WHERE app_id = ? AND id = ?",
                            (self.app_id, awaited["id"]),
                        )
                self._move(conn, waiter_id, S.PAUSED, runner_id)
        # raised after the commit: failing a fresh repeat of the call must be kept
        if cycle is not None:
            raise cycle
        return True

    def _cycle(self, conn: sqlite3.Connection, waiter: Row, awaited: Row, chain: list[Row]) -> CycleDetectedError:
        # Report the chain from the outermost waiter down to the awaited call.
        described = [self._describe(member) for member in reversed(chain)]
        described.append(self._describe(awaited))
        error = CycleDetectedError.from_chain(described)
        if awaited["status"] == S.REGISTERED.value and awaited["parent"] == waiter["id"]:
            # A fresh repeat of a call already in the chain: running it would recurse forever.
            self._dequeue(conn, awaited["id"])
            conn.execute(
                "UPDATE invocations SET error = ? WHERE app_id = ? AND id = ?",
                (encode_exception(error), self.app_id, awaited["id"]),
            )
            self._move(conn, awaited["id"], S.FAILED)
        return error

    def resume(self, runner_id: str, waiter_id: str) -> None:
        with self.store.transaction() as conn:
            if self._owned_row(conn, runner_id, waiter_id, (S.PAUSED.value,)) is None:
                raise LeaseLostError(f"runner {runner_id} no longer owns paused invocation {waiter_id}")
            self._drop_waits(conn, waiter_id)
            self._move(conn, waiter_id, S.RESUMED, runner_id)

    def renew_leases(self, runner_id: str, invocation_ids: Sequence[str], lease_seconds: float) -> list[str]:
        lost = []
        expires = time.time() + lease_seconds
        with self.store.transaction() as conn:
            for invocation_id in invocation_ids:
                renewed = conn.execute(
                    f"UPDATE invocations SET lease_expires = ? WHERE app_id = ? AND id = ? AND owner = ? "
                    f"AND status IN ({marks(_OWNED)})",
                    (expires, self.app_id, invocation_id, runner_id, *_OWNED),
                ).rowcount
                if not renewed:
                    lost.append(invocation_id)
        return lost

    def recover_expired(self, max_stalls: int) -> list[str]:
        now = time.time()
        if not self._anything_expired(now):  # the usual case: no write lock needed
            return []
        with self.store.transaction() as conn:
            expired = [
                row
                for row in conn.execute(
                    "SELECT * FROM invocations WHERE app_id = ? AND lease_expires IS NOT NULL AND lease_expires <= ? "
                    "ORDER BY lease_expires",
                    (self.app_id, now),
                ).fetchall()
            ]
            for row in expired:
                self._recover(conn, row, max_stalls)
            self._expire_results(conn, now)
        return [row["id"] for row in expired]

    def _anything_expired(self, now: float) -> bool:
        with self.store.reading() as conn:
            lease = conn.execute(
                "SELECT 1 FROM invocations WHERE app_id = ? AND lease_expires IS NOT NULL AND lease_expires <= ? "
                "LIMIT 1",
                (self.app_id, now),
            ).fetchone()
            result = conn.execute(
                "SELECT 1 FROM invocations WHERE app_id = ? AND finished_at IS NOT NULL AND finished_at < ? LIMIT 1",
                (self.app_id, now - self.app.conf.result_ttl),
            ).fetchone()
        return lease is not None or result is not None

    def _recover(self, conn: sqlite3.Connection, row: Row, max_stalls: int) -> None:
        invocation_id = row["id"]
        self._disown(conn, invocation_id)
        recovery = S.PENDING_RECOVERY if row["status"] == S.PENDING.value else S.RUNNING_RECOVERY
        self._move(conn, invocation_id, recovery, row["owner"])
        stalls = row["stalls"] + 1
        conn.execute(
            "UPDATE invocations SET stalls = ? WHERE app_id = ? AND id = ?", (stalls, self.app_id, invocation_id)
        )
        self._drop_waits(conn, invocation_id)
        self._release_key(conn, row)
        if stalls > max_stalls:
            error = StalledInvocationError(
                f"invocation {invocation_id} of {row['task_id']} lost its runner {stalls} times "
                f"(died or hung; max_stalls={max_stalls}), so it is not retried again"
            )
            conn.execute(
                "UPDATE invocations SET error = ? WHERE app_id = ? AND id = ?",
                (encode_exception(error), self.app_id, invocation_id),
            )
            self._move(conn, invocation_id, S.FAILED)
        else:
            self._move(conn, invocation_id, S.REROUTED)
            self._enqueue(conn, invocation_id, front=True)

    def _expire_results(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete final invocations (with history and edges) that ended more than ``result_ttl`` ago."""
        cutoff = now - self.app.conf.result_ttl
        old = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM invocations WHERE app_id = ? AND finished_at IS NOT NULL AND finished_at < ?",
                (self.app_id, cutoff),
            ).fetchall()
        ]
        for part in db.chunks(old):
            placeholders = marks(part)
            conn.execute(f"DELETE FROM history WHERE app_id = ? AND id IN ({placeholders})", (self.app_id, *part))
            for column in ("waiter", "awaited"):  # one indexed delete each (an OR would scan)
                conn.execute(
                    f"DELETE FROM waits WHERE app_id = ? AND {column} IN ({placeholders})", (self.app_id, *part)
                )
            conn.execute(f"DELETE FROM invocations WHERE app_id = ? AND id IN ({placeholders})", (self.app_id, *part))

    def release(self, runner_id: str, invocation_ids: Sequence[str]) -> None:
        with self.store.transaction() as conn:
            for invocation_id in invocation_ids:
                row = self._owned_row(conn, runner_id, invocation_id, _OWNED)
                if row is None:
                    continue
                self._disown(conn, invocation_id)
                self._drop_waits(conn, invocation_id)
                self._release_key(conn, row)
                self._move(conn, invocation_id, S.REROUTED, runner_id)
                self._enqueue(conn, invocation_id, front=True)

    def kill(self, invocation_id: str) -> bool:
        with self.store.transaction() as conn:
            row = self._row(conn, invocation_id)
            recovering = (S.PENDING_RECOVERY.value, S.RUNNING_RECOVERY.value)
            if row is None or row["status"] in _FINAL or row["status"] in recovering:
                return False
            self._dequeue(conn, invocation_id)
            conn.execute(
                "UPDATE invocations SET parked_key = NULL, parked_seq = NULL WHERE app_id = ? AND id = ?",
                (self.app_id, invocation_id),
            )
            self._disown(conn, invocation_id)
            self._release_key(conn, row)
            self._drop_waits(conn, invocation_id)
            self._move(conn, invocation_id, S.KILLED)
            return True

    def retry(self, invocation_id: str) -> bool:
        retryable = (S.FAILED.value, S.KILLED.value, S.CONCURRENCY_CONTROLLED_FINAL.value)
        with self.store.transaction() as conn:
            row = self._row(conn, invocation_id)
            if row is None or row["status"] not in retryable:
                return False
            conn.execute(
                "UPDATE invocations SET error = NULL WHERE app_id = ? AND id = ?", (self.app_id, invocation_id)
            )
            self._move(conn, invocation_id, S.REROUTED)
            self._enqueue(conn, invocation_id)
            return True

    def purge(self) -> None:
        with self.store.transaction() as conn:
            db.purge_records(conn, self.app_id)
            self.store.notify(final=True, work=True)

    def close(self) -> None:
        self.store.close()
