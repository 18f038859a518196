"""Reads of the SQLite orchestrator: statuses, records, and waiting without busy polling.

Split from :mod:`pynenc.orchestrator.sqlite_orchestrator` (the transitions); reads never
change anything and take no write lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from pynenc import forks
from pynenc import sqlite_store as db
from pynenc import sqlite_sync as sync
from pynenc.models import InvocationRecord
from pynenc.orchestrator.sqlite_watch import FinalWatcher
from pynenc.sqlite_store import SQLiteStore
from pynenc.status import EXECUTING, FINAL, QUEUED, InvocationStatus

S = InvocationStatus
_FINAL = tuple(s.value for s in FINAL)
_EXECUTING = tuple(s.value for s in EXECUTING)
_QUEUED = tuple(s.value for s in QUEUED)


def marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class SQLiteReads:
    """The read half of :class:`~pynenc.orchestrator.sqlite_orchestrator.SQLiteOrchestrator`."""

    store: SQLiteStore
    app_id: str
    #: per thread: (number seen, ids not final, ids published and not read, when) of its last wait_final
    _local: threading.local
    _watcher: FinalWatcher

    def get_status(self, invocation_id: str) -> InvocationStatus | None:
        with self.store.reading() as conn:
            row = conn.execute(
                "SELECT status FROM invocations WHERE app_id = ? AND id = ?", (self.app_id, invocation_id)
            ).fetchone()
        return S(row[0]) if row else None

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        with self.store.snapshot() as conn:
            return db.load_record(conn, self.app_id, invocation_id)

    def get_records(self, invocation_ids: Sequence[str]) -> list[InvocationRecord | None]:
        with self.store.snapshot() as conn:  # one consistent read
            return [db.load_record(conn, self.app_id, invocation_id) for invocation_id in invocation_ids]

    def _final_among(self, invocation_ids: Sequence[str]) -> tuple[set[str], bool]:
        """(the final ones, whether any is unknown)."""
        statuses: dict[str, str] = {}
        with self.store.snapshot() as conn:
            for part in db.chunks(list(invocation_ids)):
                statuses.update(
                    conn.execute(
                        f"SELECT id, status FROM invocations WHERE app_id = ? AND id IN ({marks(part)})",
                        (self.app_id, *part),
                    ).fetchall()
                )
        final = {i for i, status in statuses.items() if status in _FINAL}
        return final, any(i not in statuses for i in invocation_ids)

    def _final_counter(self) -> int:
        with self.store.reading() as conn:
            row = conn.execute(
                "SELECT value FROM counters WHERE app_id = ? AND name = 'final'", (self.app_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def _final_since(self, final_seq: int) -> tuple[list[str], int]:
        """Ids that became final after ``final_seq`` (whatever they are now), and the new last number."""
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT id, final_seq FROM invocations WHERE app_id = ? AND final_seq > ?",
                (self.app_id, final_seq),
            ).fetchall()
        return [row[0] for row in rows], max((row[1] for row in rows), default=final_seq)

    def _final_watcher(self) -> FinalWatcher:
        watcher: FinalWatcher | None = getattr(self, "_watcher", None)
        if watcher is None or watcher.pid != forks.pid:  # none yet, or the parent's (forked)
            with sync.setup_lock():
                watcher = getattr(self, "_watcher", None)
                if watcher is None or watcher.pid != forks.pid:
                    watcher = FinalWatcher(self.store, self._final_since, self._final_counter)
                    self._watcher = watcher
        return watcher

    def wait_final(self, invocation_ids: Sequence[str], timeout: float) -> set[str]:
        # The watcher thread wakes this waiter only when one of its ids went final, and says
        # which: the statuses of those are read again (they decide: an id may have been
        # retried since). The first look reads every id, except when this thread comes back
        # for the rest of the ids of its last call (as wait loops and InvocationGroup do)
        # within a second: then only what went final in between is read.
        ids = list(dict.fromkeys(invocation_ids))
        if not ids:
            return set()
        deadline = time.monotonic() + timeout
        watcher = self._final_watcher()
        event = watcher.watch(ids)
        final: set[str] = set()
        try:
            to_read = self._continued(ids, watcher)
            while True:
                to_read |= watcher.take_published(event)
                if to_read:
                    final, missing = self._final_among(sorted(to_read))
                    if final or missing:
                        return final
                to_read = set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return final
                event.wait(remaining)
        finally:
            leftover, seq = watcher.unwatch_at(ids, event)
            self._local.last_look = (seq, set(ids) - final, leftover - final, time.monotonic())

    def _continued(self, ids: list[str], watcher: FinalWatcher) -> set[str]:
        """What to read first: every id, or, continuing this thread's last call, what may have
        gone final since it ended (when that is fewer rows to read than the ids)."""
        previous: tuple[int, set[str], set[str], float] | None = getattr(self._local, "last_look", None)
        if previous is None:
            return set(ids)
        seq, pending, leftover, when = previous
        if time.monotonic() - when >= 1.0 or not pending.issuperset(ids) or watcher.seq - seq > len(ids):
            return set(ids)
        new, _ = self._final_since(seq)
        return (leftover | set(new)).intersection(ids)

    def wait_for_work(self, timeout: float) -> None:
        self.store.wait_until(lambda: self.queue_depth() > 0, timeout, "work")

    def iter_records(self, statuses: Iterable[InvocationStatus] | None = None) -> Iterable[InvocationRecord]:
        with self.store.snapshot() as conn:
            if statuses is None:
                return db.load_records(conn, self.app_id)
            wanted = [s.value for s in statuses]
            return db.load_records(conn, self.app_id, f"status IN ({marks(wanted)})", wanted)

    def status_counts(self) -> dict[InvocationStatus, int]:
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT status, COUNT(*) FROM invocations WHERE app_id = ? GROUP BY status", (self.app_id,)
            ).fetchall()
        return {S(status): count for status, count in rows}

    def task_status_counts(self) -> dict[str, dict[InvocationStatus, int]]:
        counts: dict[str, dict[InvocationStatus, int]] = {}
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT task_id, status, COUNT(*) FROM invocations WHERE app_id = ? GROUP BY task_id, status",
                (self.app_id,),
            ).fetchall()
        for task_id, status, count in rows:
            counts.setdefault(task_id, {})[S(status)] = count
        return counts

    def final_count_since(self, since: float) -> int:
        # finished_at is set by every move to a final status and cleared by every other (indexed)
        with self.store.reading() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM invocations WHERE app_id = ? AND finished_at >= ?", (self.app_id, since)
            ).fetchone()
        return int(row[0])

    def failed_since(self, since: float) -> dict[str, int]:
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT task_id, COUNT(*) FROM invocations WHERE app_id = ? AND finished_at >= ? AND status = ? "
                "GROUP BY task_id",
                (self.app_id, since, S.FAILED.value),
            ).fetchall()
        return {task_id: count for task_id, count in rows}

    def oldest_queued(self) -> InvocationRecord | None:
        # When each queued one entered its status: its last history entry (indexed by id, seq).
        with self.store.snapshot() as conn:
            row = conn.execute(
                "SELECT i.id, (SELECT h.ts FROM history h WHERE h.app_id = i.app_id AND h.id = i.id "
                "ORDER BY h.seq DESC LIMIT 1) AS since FROM invocations i "
                f"WHERE i.app_id = ? AND i.status IN ({marks(_QUEUED)}) ORDER BY since LIMIT 1",
                (self.app_id, *_QUEUED),
            ).fetchone()
            if row is None:
                return None
            records = db.load_records(conn, self.app_id, "id = ?", (row[0],))
        return records[0] if records else None

    def queue_depth(self) -> int:
        with self.store.reading() as conn:
            return db.depth(conn, self.app_id)

    def executing_count(self) -> int:
        with self.store.reading() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM invocations WHERE app_id = ? AND status IN ({marks(_EXECUTING)})",
                (self.app_id, *_EXECUTING),
            ).fetchone()
        return int(row[0])
