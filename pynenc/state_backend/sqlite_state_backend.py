"""SQLiteStateBackend: invocation records and runner info in the app's SQLite file.

It owns the :class:`~pynenc.sqlite_store.SQLiteStore` of the app (the
connections to the file); the SQLite orchestrator and broker of the same app
use this store, so each thread has one connection to the file. Records are
written by the orchestrator inside its transitions; reads here take one
consistent snapshot.

Published info (runners, supervisors) lives in the ``info`` table with an
absolute expiry time; expired rows are skipped when read and deleted by the
next publish.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from pynenc import sqlite_store as db
from pynenc.models import InvocationRecord
from pynenc.sqlite_store import SQLiteStore
from pynenc.state_backend.base import BaseStateBackend


class SQLiteStateBackend(BaseStateBackend):
    family = "sqlite"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.store = SQLiteStore.for_app(app)
        self.app_id = self.store.app_id

    @property
    def path(self) -> str:
        """Absolute path of the database file."""
        return self.store.path

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        with self.store.snapshot() as conn:
            return db.load_record(conn, self.app_id, invocation_id)

    def iter_records(self) -> Iterable[InvocationRecord]:
        with self.store.snapshot() as conn:
            return db.load_records(conn, self.app_id)

    def publish_info(self, kind: str, key: str, data: dict[str, Any], ttl: float) -> None:
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM info WHERE app_id = ? AND expires <= ?", (self.app_id, now))
            conn.execute(
                "INSERT OR REPLACE INTO info (app_id, kind, key, data, expires) VALUES (?, ?, ?, ?, ?)",
                (self.app_id, kind, key, orjson.dumps(data).decode(), now + ttl),
            )

    def list_info(self, kind: str) -> dict[str, dict[str, Any]]:
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT key, data FROM info WHERE app_id = ? AND kind = ? AND expires > ? ORDER BY key",
                (self.app_id, kind, time.time()),
            ).fetchall()
        return {str(key): orjson.loads(data) for key, data in rows}

    def purge(self) -> None:
        with self.store.transaction() as conn:
            db.purge_records(conn, self.app_id)
            conn.execute("DELETE FROM info WHERE app_id = ?", (self.app_id,))
            self.store.notify(final=True, work=True)

    def close(self) -> None:
        self.store.close()
