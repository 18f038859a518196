"""The SQLite file: created with a schema version, refused (and left untouched) when it is not usable."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from pynenc import Pynenc, PynencBuilder
from pynenc.exceptions import BackendUnavailableError, ConfigurationError
from pynenc.sqlite_schema import SCHEMA_VERSION


def sqlite_app(path: Path, app_id: str = "schema") -> Pynenc:
    return PynencBuilder().app_id(app_id).sqlite(str(path)).logging_level("WARNING").build()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_next_to(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_new_file_gets_the_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    app = sqlite_app(path)
    assert app.orchestrator.queue_depth() == 0
    app.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_invocations_queue" in indexes


def test_missing_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "deep.db"
    app = sqlite_app(path)
    assert app.orchestrator.status_counts() == {}
    assert path.is_file()
    app.close()


def test_corrupt_file_is_refused_and_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database, just some text that was here before\n" * 100)
    before = digest(path)
    app = sqlite_app(path)
    with pytest.raises(BackendUnavailableError) as info:
        app.orchestrator.queue_depth()
    message = str(info.value)
    assert str(path) in message and "corrupt or not a SQLite database" in message
    assert digest(path) == before
    assert files_next_to(path) == ["corrupt.db"]
    app.close()


def test_truncated_database_is_refused_and_not_modified(tmp_path: Path) -> None:
    good = tmp_path / "good.db"
    app = sqlite_app(good)
    app.orchestrator.status_counts()
    app.close()
    path = tmp_path / "truncated.db"
    path.write_bytes(good.read_bytes()[:100] + b"\x00garbage" * 50)
    before = digest(path)
    broken = sqlite_app(path)
    with pytest.raises(BackendUnavailableError, match="truncated.db"):
        broken.orchestrator.status_counts()
    assert digest(path) == before
    broken.close()


def test_newer_schema_version_is_refused_and_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    app = sqlite_app(path)
    app.orchestrator.status_counts()
    app.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    before = digest(path)
    future = sqlite_app(path)
    with pytest.raises(ConfigurationError) as info:
        future.orchestrator.queue_depth()
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and "upgrade pynenc" in message
    assert str(path) in message
    assert digest(path) == before
    future.close()


def test_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.close()
    before = digest(path)
    app = sqlite_app(path)
    with pytest.raises(ConfigurationError, match="customers"):
        app.orchestrator.queue_depth()
    assert digest(path) == before
    app.close()


def test_many_threads_opening_a_new_file_at_once_create_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    apps = [sqlite_app(path, f"race-{i}") for i in range(6)]
    barrier = threading.Barrier(len(apps))
    errors: list[BaseException] = []

    def open_it(app: Pynenc) -> None:
        barrier.wait()
        try:
            app.orchestrator.status_counts()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
    for app in apps:
        app.close()


def test_older_schema_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    from pynenc.sqlite_schema import MIGRATIONS

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO invocations (app_id, id, task_id, arguments, status, call_key, created_at) "
            "VALUES ('schema', 'kept', 'tests.t', '{}', 'SUCCESS', 'ck', 1.0)"
        )
    conn.close()
    app = sqlite_app(path)
    assert app.orchestrator.get_status("kept") is not None
    assert app.orchestrator.wait_final(["kept"], 1.0) == {"kept"}
    app.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        columns = {row[1] for row in conn.execute("PRAGMA table_info(invocations)")}
    conn.close()
    assert "final_seq" in columns


def test_a_path_that_cannot_be_a_database_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    app = sqlite_app(folder)
    with pytest.raises(BackendUnavailableError, match="a-folder.db"):
        app.orchestrator.queue_depth()
    app.close()
