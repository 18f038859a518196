"""Reads of the SQLite orchestrator: statuses, records, and waiting without busy polling.

Split from :mod:`pynenc.orchestrator.sqlite_orchestrator` (the transitions); reads never
change anything and take no write lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from pynenc import sqlite_store as db
from pynenc.models import InvocationRecord
from pynenc.sqlite_store import SQLiteStore
from pynenc.status import EXECUTING, FINAL, InvocationStatus

S = InvocationStatus
_FINAL = tuple(s.value for s in FINAL)
_EXECUTING = tuple(s.value for s in EXECUTING)


def marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class SQLiteReads:
    """The read half of :class:`~pynenc.orchestrator.sqlite_orchestrator.SQLiteOrchestrator`."""

    store: SQLiteStore
    app_id: str
    #: per thread: (final_seq, ids not final then, when) of its last full look in wait_final
    _local: threading.local

    def get_status(self, invocation_id: str) -> InvocationStatus | None:
        with self.store.reading() as conn:
            row = conn.execute(
                "SELECT status FROM invocations WHERE app_id = ? AND id = ?", (self.app_id, invocation_id)
            ).fetchone()
        return S(row[0]) if row else None

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        with self.store.snapshot() as conn:
            return db.load_record(conn, self.app_id, invocation_id)

    def _final_now(self, invocation_ids: Sequence[str]) -> tuple[set[str], bool, int]:
        """(the final ones, whether any is final or unknown, the last ``final_seq`` handed out)."""
        statuses: dict[str, str] = {}
        with self.store.snapshot() as conn:
            for part in db.chunks(list(dict.fromkeys(invocation_ids))):
                statuses.update(
                    conn.execute(
                        f"SELECT id, status FROM invocations WHERE app_id = ? AND id IN ({marks(part)})",
                        (self.app_id, *part),
                    ).fetchall()
                )
            row = conn.execute(
                "SELECT value FROM counters WHERE app_id = ? AND name = 'final'", (self.app_id,)
            ).fetchone()
        final = {i for i, status in statuses.items() if status in _FINAL}
        done = bool(final) or any(i not in statuses for i in invocation_ids)
        return final, done, int(row[0]) if row else 0

    def _final_since(self, final_seq: int) -> tuple[list[str], int]:
        """Ids that became final after ``final_seq`` (whatever they are), and the new last number."""
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT id, final_seq FROM invocations WHERE app_id = ? AND final_seq > ?",
                (self.app_id, final_seq),
            ).fetchall()
        return [row[0] for row in rows], max((row[1] for row in rows), default=final_seq)

    def wait_final(self, invocation_ids: Sequence[str], timeout: float) -> set[str]:
        # The first look reads every id; later looks read only what became final since, so
        # waiting on a large group costs per finished invocation, not per id and wake-up. A
        # caller that comes back for the rest of the same ids (as InvocationGroup.results does)
        # continues from its last look, re-reading everything at most once a second.
        wanted = set(invocation_ids)
        found: set[str] = set()
        previous = getattr(self._local, "last_look", None)
        last_seq: int | None = None
        if previous is not None:
            seq, pending, when = previous
            if wanted <= pending and time.monotonic() - when < 1.0:
                last_seq = seq

        def check() -> bool:
            nonlocal last_seq
            if last_seq is None:
                final, done, last_seq = self._final_now(invocation_ids)
                self._local.last_look = (last_seq, wanted - final, time.monotonic())
                found.update(final)
                return done
            new, last_seq = self._final_since(last_seq)
            found.update(wanted.intersection(new))
            return bool(found)

        self.store.wait_until(check, timeout, "final")
        if last_seq is not None and getattr(self._local, "last_look", None) is not None:
            self._local.last_look = (last_seq, wanted - found, self._local.last_look[2])
        return found

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
