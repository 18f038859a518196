"""SQLiteBroker: the queue of runnable invocations, as columns of the ``invocations`` table.

An invocation is queued while its ``seq`` is not NULL; claim order is
``priority DESC, seq`` (a partial index serves exactly that query). Enqueueing
at the back takes the next value of a per-app counter, at the front the next
value of a counter going down from -1, so FIFO holds within a priority.

The orchestrator moves the queue inside its own transactions (through the
functions of :mod:`pynenc.sqlite_store`); each method here is its own small
transaction, for inspection and tools.
"""

from __future__ import annotations

from typing import Any

from pynenc import sqlite_store as db
from pynenc.broker.base import BaseBroker
from pynenc.sqlite_store import SQLiteStore


class SQLiteBroker(BaseBroker):
    family = "sqlite"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._store: SQLiteStore | None = None

    @property
    def store(self) -> SQLiteStore:
        # The state backend owns the app's connections; share them (built lazily: the app may
        # build the broker before the state backend).
        if self._store is None:
            state_store = getattr(self.app.state_backend, "store", None)
            self._store = state_store if isinstance(state_store, SQLiteStore) else SQLiteStore.for_app(self.app)
        return self._store

    def enqueue(self, invocation_id: str, priority: int = 0, front: bool = False) -> None:
        with self.store.transaction() as conn:
            db.enqueue(conn, self.store.app_id, invocation_id, priority, front)
            self.store.notify(work=True)

    def pop(self) -> str | None:
        with self.store.transaction() as conn:
            return db.pop(conn, self.store.app_id)

    def add_priority(self, invocation_id: str, delta: int) -> None:
        with self.store.transaction() as conn:
            db.add_priority(conn, self.store.app_id, invocation_id, delta)

    def remove(self, invocation_id: str) -> None:
        with self.store.transaction() as conn:
            db.remove(conn, self.store.app_id, invocation_id)

    def depth(self) -> int:
        with self.store.reading() as conn:
            return db.depth(conn, self.store.app_id)

    def peek(self, limit: int = 10) -> list[tuple[str, int]]:
        with self.store.reading() as conn:
            return db.peek(conn, self.store.app_id, limit)

    def purge(self) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE invocations SET seq = NULL WHERE app_id = ?", (self.store.app_id,))
