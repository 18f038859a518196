"""The SQLite file shared by every pynenc process of one host.

:class:`SQLiteStore` gives each thread of each process its own connection
(sqlite3 connections must not cross threads or a fork), in WAL mode with a busy
timeout. :meth:`SQLiteStore.transaction` is one ``BEGIN IMMEDIATE``
transaction: the write lock is taken up front, so two writers never both read
then write. Writers of the host queue on a lock file first and retry with
backoff while another host's process holds SQLite's lock
(:mod:`pynenc.sqlite_sync`).

Waiting (:meth:`SQLiteStore.wait_until`) sleeps with a backoff from 1 ms to
100 ms and is woken early by commits of this process and, through the
doorbell of :mod:`pynenc.sqlite_sync`, of the other processes of the host;
``PRAGMA data_version`` tells a waiter cheaply whether anybody committed since
it last looked, so a sleeper that wakes for nothing does not run its query.

The queue and record queries shared by the orchestrator, broker and state
backend live here too, as functions taking the connection of the current
transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from pynenc import forks
from pynenc import sqlite_sync as sync
from pynenc.exceptions import BackendUnavailableError
from pynenc.models import HistoryEntry, InvocationRecord
from pynenc.sqlite_schema import ensure_schema
from pynenc.status import InvocationStatus

BUSY_TIMEOUT_MS = 5000
#: how long a transaction keeps retrying to get the write lock before giving up
LOCK_DEADLINE_SECONDS = 60.0
MIN_SLEEP, MAX_SLEEP = 0.001, 0.1
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def db_path_of(app: Any) -> str:
    """The database file of an app: ``sqlite_db_path`` or ``<app_id>.db`` in the working directory."""
    configured = app.conf.sqlite_db_path
    path = Path(configured) if configured else Path.cwd() / f"{app.conf.app_id}.db"
    return str(path.expanduser().resolve())


class _Conn:
    """A thread's connection; closed when the thread ends (its thread-local dies), on close() or before fork."""

    def __init__(self, conn: sqlite3.Connection, pid: int) -> None:
        self.conn: sqlite3.Connection | None = conn
        self.pid = pid
        self.depth = 0
        self.data_version = -1
        #: what the open transaction changed, for the wake-up after its commit
        self.final = False
        self.work = False

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and self.pid == forks.pid:  # one inherited through fork is never touched
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __del__(self) -> None:
        self.close()


def _use_wal(conn: sqlite3.Connection) -> None:
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")


class SQLiteStore:
    """Connections to one database file for one app (rows are scoped by ``app_id``).

    Use connections only inside :meth:`transaction`, :meth:`snapshot` or :meth:`reading`.
    """

    def __init__(self, path: str, app_id: str) -> None:
        self.path = path
        self.app_id = app_id
        self._local = threading.local()
        self._all: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self._pid = forks.pid
        self._schema_checked = False
        self._schema_lock = threading.Lock()
        self.signal = sync.signal_for(path)

    @classmethod
    def for_app(cls, app: Any) -> SQLiteStore:
        return cls(db_path_of(app), app.conf.app_id)

    # ----- connections (call with the gate held) -------------------------------------------
    def _forget_parent(self) -> None:
        pid = forks.pid
        if pid != self._pid:  # forked: nothing of the parent's may be used here
            self._pid = pid
            self._local = threading.local()
            self._all = weakref.WeakSet()
            self._schema_lock = threading.Lock()
            self.signal = sync.signal_for(self.path)

    def _holder(self) -> _Conn:
        self._forget_parent()
        pid = self._pid
        holder: _Conn | None = getattr(self._local, "holder", None)
        if holder is None or holder.conn is None:
            holder = _Conn(self._open(), pid)
            self._local.holder = holder
            self._all.add(holder)
            sync.register_connection(holder)
        return holder

    @staticmethod
    def _conn(holder: _Conn) -> sqlite3.Connection:
        assert holder.conn is not None  # only closed under the exclusive gate
        return holder.conn

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection in autocommit mode: each statement sees the latest commit."""
        with self._translated(), sync.gate().held():
            yield self._conn(self._holder())

    def _open(self) -> sqlite3.Connection:
        if not self._schema_checked:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise BackendUnavailableError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row  # rows read by index and by column name
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            with self._schema_lock:
                if not self._schema_checked:
                    self._retry_locked(lambda: ensure_schema(conn, self.path))
                    self._schema_checked = True
            # WAL is a property of the file: set once, after the schema check (which must not
            # modify a file it refuses); switching needs a lock another opener may hold.
            self._retry_locked(lambda: _use_wal(conn))
            conn.execute("PRAGMA synchronous = NORMAL")
            # the WAL file is reused, not shrunk, after checkpoints: cap what a burst leaves behind
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close this process's connections to the file (threads open new ones on next use)."""
        if not sync.gate().acquire_exclusive():
            return  # called from inside an operation of this thread: nothing can be closed safely
        try:
            for holder in list(self._all):
                holder.close()
        finally:
            sync.gate().release_exclusive()

    # ----- transactions --------------------------------------------------------------------
    def _retry_locked(self, action: Callable[[], object]) -> None:
        deadline = time.monotonic() + LOCK_DEADLINE_SECONDS
        delay = MIN_SLEEP
        while True:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise BackendUnavailableError(f"SQLite database {self.path!r}: {exc}") from exc
                if time.monotonic() > deadline:
                    raise BackendUnavailableError(
                        f"SQLite database {self.path!r} stayed locked for {LOCK_DEADLINE_SECONDS:.0f} s: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_SLEEP)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite failures (disk full, read-only or vanished file, I/O error) as BackendUnavailableError."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a bug of the caller (e.g. a duplicate id), not a backend failure
        except sqlite3.DatabaseError as exc:
            raise BackendUnavailableError(f"SQLite database {self.path!r}: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); nested use joins the outer one."""
        with self._translated(), sync.gate().held():
            holder = self._holder()
            conn = self._conn(holder)
            if holder.depth:
                holder.depth += 1
                try:
                    yield conn
                finally:
                    holder.depth -= 1
                return
            with sync.writer_lock_for(self.path).held():
                self._retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
                holder.depth = 1
                try:
                    yield conn
                    self._retry_locked(lambda: conn.execute("COMMIT"))
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    holder.final = holder.work = False
                    raise
                finally:
                    holder.depth = 0
            final, work = holder.final, holder.work
            holder.final = holder.work = False
        sync.committed(self.path, final, work)

    def notify(self, final: bool = False, work: bool = False) -> None:
        """Wake in-process waiters once the current transaction commits (call inside it)."""
        holder = self._holder()
        holder.final |= final
        holder.work |= work

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one consistent state."""
        with self._translated(), sync.gate().held():
            holder = self._holder()
            conn = self._conn(holder)
            if holder.depth:
                yield conn
                return
            conn.execute("BEGIN")  # deferred: takes no lock until the first read, never busy in WAL
            holder.depth = 1
            try:
                yield conn
            finally:
                holder.depth = 0
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("COMMIT")

    # ----- waiting -------------------------------------------------------------------------
    def changed_elsewhere(self) -> bool:
        """Whether another connection committed since this thread last asked (cheap)."""
        with self._translated(), sync.gate().held():
            holder = self._holder()
            version = int(self._conn(holder).execute("PRAGMA data_version").fetchone()[0])
            changed = version != holder.data_version
            holder.data_version = version
            return changed

    def wait_until(self, check: Callable[[], bool], timeout: float, kind: str) -> bool:
        """Call ``check`` until it is true or ``timeout`` passes, sleeping with backoff in between.

        ``kind`` ("final" or "work") names the in-process counter that ends a sleep early.
        """
        deadline = time.monotonic() + timeout
        delay = MIN_SLEEP
        sync.doorbell_for(self.path).listen()
        self._forget_parent()  # in a forked child, sleep on this process's Signal, not the parent's
        signal = self.signal
        first = True
        while True:
            seen = signal.count(kind)
            if (self.changed_elsewhere() or first) and check():
                return True
            first = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if signal.sleep(kind, seen, min(delay, remaining)):
                delay = MIN_SLEEP
                first = True  # our own process changed it: look again
            else:
                delay = min(delay * 2, MAX_SLEEP)


# ----- the queue (shared by orchestrator and broker) ------------------------------------------
def next_counter(conn: sqlite3.Connection, app_id: str, name: str, step: int) -> int:
    row = conn.execute(
        "INSERT INTO counters (app_id, name, value) VALUES (?, ?, ?) "
        "ON CONFLICT (app_id, name) DO UPDATE SET value = value + excluded.value RETURNING value",
        (app_id, name, step),
    ).fetchone()
    return int(row[0])


def enqueue(conn: sqlite3.Connection, app_id: str, invocation_id: str, priority: int | None, front: bool) -> None:
    """Queue an id behind (or, with ``front``, ahead of) its priority's FIFO; None keeps its priority."""
    sequence = next_counter(conn, app_id, "front" if front else "back", -1 if front else 1)
    conn.execute(
        "UPDATE invocations SET priority = COALESCE(?, priority), seq = ? WHERE app_id = ? AND id = ?",
        (priority, sequence, app_id, invocation_id),
    )


def pop(conn: sqlite3.Connection, app_id: str) -> str | None:
    row = conn.execute(
        "SELECT id FROM invocations WHERE app_id = ? AND seq IS NOT NULL ORDER BY priority DESC, seq LIMIT 1",
        (app_id,),
    ).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE invocations SET seq = NULL WHERE app_id = ? AND id = ?", (app_id, row[0]))
    return str(row[0])


def add_priority(conn: sqlite3.Connection, app_id: str, invocation_id: str, delta: int) -> None:
    conn.execute(
        "UPDATE invocations SET priority = priority + ? WHERE app_id = ? AND id = ? AND seq IS NOT NULL",
        (delta, app_id, invocation_id),
    )


def remove(conn: sqlite3.Connection, app_id: str, invocation_id: str) -> None:
    conn.execute("UPDATE invocations SET seq = NULL WHERE app_id = ? AND id = ?", (app_id, invocation_id))


def depth(conn: sqlite3.Connection, app_id: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM invocations WHERE app_id = ? AND seq IS NOT NULL", (app_id,)).fetchone()
    return int(row[0])


def peek(conn: sqlite3.Connection, app_id: str, limit: int) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT id, priority FROM invocations WHERE app_id = ? AND seq IS NOT NULL ORDER BY priority DESC, seq LIMIT ?",
        (app_id, limit),
    ).fetchall()
    return [(str(row[0]), int(row[1])) for row in rows]


# ----- records (shared by orchestrator and state backend) -------------------------------------
RECORD_COLUMNS = (
    "id, task_id, arguments, status, call_key, num_retries, stalls, owner, parent, created_at, result, error"
)


def chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def record_from_row(row: Sequence[Any]) -> InvocationRecord:
    return InvocationRecord(
        invocation_id=row[0],
        task_id=row[1],
        arguments=orjson.loads(row[2]),
        status=InvocationStatus(row[3]),
        call_key=row[4],
        num_retries=row[5],
        stalls=row[6],
        owner=row[7],
        parent_invocation_id=row[8],
        created_at=row[9],
        result=row[10],
        error=row[11],
    )


def load_records(
    conn: sqlite3.Connection, app_id: str, where: str = "", params: Sequence[Any] = ()
) -> list[InvocationRecord]:
    """Records (with history and wait edges) of this app matching ``where``; call inside a snapshot."""
    sql = f"SELECT {RECORD_COLUMNS} FROM invocations WHERE app_id = ?{' AND ' + where if where else ''} ORDER BY rowid"
    records = [record_from_row(row) for row in conn.execute(sql, (app_id, *params))]
    if not records:
        return records
    by_id = {record.invocation_id: record for record in records}
    ids = list(by_id)
    edges: dict[int, tuple[str, str]] = {}
    for part in chunks(ids):
        marks = ",".join("?" * len(part))
        for inv, status, ts, runner in conn.execute(
            f"SELECT id, status, ts, runner FROM history WHERE app_id = ? AND id IN ({marks}) ORDER BY seq",
            (app_id, *part),
        ):
            by_id[inv].history.append(HistoryEntry(InvocationStatus(status), ts, runner))
        # two indexed queries (an OR of both would scan every wait of the app)
        for column in ("waiter", "awaited"):
            for seq, waiter, awaited in conn.execute(
                f"SELECT seq, waiter, awaited FROM waits WHERE app_id = ? AND {column} IN ({marks})",
                (app_id, *part),
            ):
                edges[seq] = (waiter, awaited)
    for seq in sorted(edges):
        waiter, awaited = edges[seq]
        if waiter in by_id:
            by_id[waiter].waiting_for.append(awaited)
        if awaited in by_id:
            by_id[awaited].waited_by.append(waiter)
    return records


def load_record(conn: sqlite3.Connection, app_id: str, invocation_id: str) -> InvocationRecord | None:
    records = load_records(conn, app_id, "id = ?", (invocation_id,))
    return records[0] if records else None


def purge_records(conn: sqlite3.Connection, app_id: str) -> None:
    for table in ("invocations", "history", "waits", "running_keys"):
        conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))
    # "final" keeps counting: waiters remember the last number they saw
    conn.execute("DELETE FROM counters WHERE app_id = ? AND name != 'final'", (app_id,))
