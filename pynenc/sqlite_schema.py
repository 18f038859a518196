"""Schema of the SQLite backend and its migrations.

The database holds a ``schema_version`` table with one row. A new file is
created at :data:`SCHEMA_VERSION`; an older file is migrated step by step, each
step in the same ``BEGIN IMMEDIATE`` transaction as the version bump, so two
processes opening the file at once migrate it once. A file this code cannot
use is refused with an error naming it and is never modified:

* not a SQLite database (corrupt, or some other file) -> BackendUnavailableError
* a newer schema version than this code knows       -> ConfigurationError
* a SQLite database with tables but no pynenc schema -> ConfigurationError

Every row carries the ``app_id`` of its app, so several apps may share a file
and ``purge`` of one app never touches another's rows.
"""

from __future__ import annotations

import sqlite3

from pynenc.exceptions import BackendUnavailableError, ConfigurationError

SCHEMA_VERSION = 2

_V1 = [
    """CREATE TABLE invocations (
        app_id TEXT NOT NULL,
        id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        arguments TEXT NOT NULL,
        status TEXT NOT NULL,
        call_key TEXT NOT NULL,
        registration_key TEXT,
        reg_indexed INTEGER NOT NULL DEFAULT 0,
        running_key TEXT,
        reroute INTEGER NOT NULL DEFAULT 1,
        diff_raise INTEGER NOT NULL DEFAULT 0,
        parent TEXT,
        owner TEXT,
        lease_expires REAL,
        num_retries INTEGER NOT NULL DEFAULT 0,
        stalls INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0,
        seq INTEGER,
        parked_key TEXT,
        parked_seq INTEGER,
        created_at REAL NOT NULL,
        finished_at REAL,
        result TEXT,
        error TEXT,
        PRIMARY KEY (app_id, id)
    )""",
    # the claim query: queued rows (seq not null) by priority desc, seq asc
    "CREATE INDEX ix_invocations_queue ON invocations (app_id, priority DESC, seq) WHERE seq IS NOT NULL",
    "CREATE INDEX ix_invocations_lease ON invocations (app_id, lease_expires) WHERE lease_expires IS NOT NULL",
    "CREATE INDEX ix_invocations_status ON invocations (app_id, status)",
    "CREATE INDEX ix_invocations_finished ON invocations (app_id, finished_at) WHERE finished_at IS NOT NULL",
    "CREATE UNIQUE INDEX ix_invocations_registration ON invocations (app_id, registration_key) WHERE reg_indexed = 1",
    "CREATE INDEX ix_invocations_parked ON invocations (app_id, parked_key, parked_seq) WHERE parked_key IS NOT NULL",
    """CREATE TABLE history (
        seq INTEGER PRIMARY KEY,
        app_id TEXT NOT NULL,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        ts REAL NOT NULL,
        runner TEXT
    )""",
    "CREATE INDEX ix_history_id ON history (app_id, id, seq)",
    """CREATE TABLE waits (
        seq INTEGER PRIMARY KEY,
        app_id TEXT NOT NULL,
        waiter TEXT NOT NULL,
        awaited TEXT NOT NULL,
        UNIQUE (app_id, waiter, awaited)
    )""",
    "CREATE INDEX ix_waits_awaited ON waits (app_id, awaited, seq)",
    """CREATE TABLE running_keys (
        app_id TEXT NOT NULL,
        key TEXT NOT NULL,
        holder TEXT NOT NULL,
        PRIMARY KEY (app_id, key)
    )""",
    """CREATE TABLE counters (
        app_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (app_id, name)
    )""",
    """CREATE TABLE info (
        app_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (app_id, kind, key)
    )""",
]

_V2 = [
    # the order in which invocations became final: a waiter asks only for what is new since it
    # last looked (writers are serialized, so a reader that sees number n has seen all below n)
    "ALTER TABLE invocations ADD COLUMN final_seq INTEGER",
    "CREATE INDEX ix_invocations_final_seq ON invocations (app_id, final_seq) WHERE final_seq IS NOT NULL",
    # the waits of a set of invocations, as waiters
    "CREATE INDEX ix_waits_waiter ON waits (app_id, waiter, seq)",
]

#: MIGRATIONS[n] takes a database at version n to version n + 1 (version 0: empty file).
MIGRATIONS: dict[int, list[str]] = {0: _V1, 1: _V2}


def _fail_unreadable(path: str, exc: sqlite3.DatabaseError) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"SQLite database {path!r} cannot be used: {exc}. It is corrupt or not a SQLite database; pynenc "
        "leaves it untouched: move it away or point sqlite_db_path to another file"
    )


def read_version(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of the file (0 for an empty one); refuse files that are not ours."""
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                raise ConfigurationError(
                    f"SQLite database {path!r} holds tables ({', '.join(sorted(tables))}) but no pynenc schema; "
                    "pynenc will not write into a database it did not create: use another sqlite_db_path"
                )
            return 0
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        raise _fail_unreadable(path, exc) from exc
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"SQLite database {path!r} has schema version {version}, newer than this pynenc knows "
            f"({SCHEMA_VERSION}); it was written by a newer pynenc: upgrade pynenc on this host "
            "(pynenc never downgrades or recreates a database)"
        )
    return version


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create or migrate the schema; ``conn`` must be in autocommit mode (isolation_level=None)."""
    if read_version(conn, path) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # outside the try: when it fails there is nothing to roll back
    try:
        version = read_version(conn, path)  # another process may have migrated meanwhile
        while version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
