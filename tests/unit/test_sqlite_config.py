"""Reaching the SQLite backend: builder, settings, pyproject sections, and the shared default."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pynenc import Pynenc, PynencBuilder
from pynenc.models import CallSpec


def backend_names(app: Pynenc) -> tuple[str, str, str]:
    return (type(app.orchestrator).__name__, type(app.broker).__name__, type(app.state_backend).__name__)


SQLITE = ("SQLiteOrchestrator", "SQLiteBroker", "SQLiteStateBackend")
MEMORY = ("MemOrchestrator", "MemBroker", "MemStateBackend")


def register_one(app: Pynenc, invocation_id: str) -> None:
    app.orchestrator.register([CallSpec(invocation_id, "tests.t", {}, f"ck-{invocation_id}")])


def test_plain_app_stays_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert backend_names(Pynenc(app_id="plain")) == MEMORY


def test_builder_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "built.db"
    app = PynencBuilder().app_id("built").sqlite(str(path)).build()
    assert backend_names(app) == SQLITE
    register_one(app, "one")
    assert path.is_file()
    assert app.state_backend.path == str(path)  # type: ignore[attr-defined]
    app.close()


def test_pyproject_sections_like_published_pynenc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'demo'\n\n"
        "[tool.pynenc]\n"
        'app_id = "from_pyproject"\n'
        'orchestrator_cls = "SQLiteOrchestrator"\n'
        'broker_cls = "SQLiteBroker"\n'
        'state_backend_cls = "SQLiteStateBackend"\n\n'
        "[tool.pynenc.sqlite]\n"
        'sqlite_db_path = "data/tasks.db"\n'
    )
    monkeypatch.chdir(tmp_path)
    app = Pynenc()
    assert app.app_id == "from_pyproject"
    assert backend_names(app) == SQLITE
    assert app.conf.sqlite_db_path == "data/tasks.db"
    assert "pyproject.toml" in app.conf.source_of("sqlite_db_path")
    register_one(app, "one")
    assert (tmp_path / "data" / "tasks.db").is_file()
    app.close()


def test_sqlite_section_alone_selects_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pynenc.sqlite]\nsqlite_db_path = "only.db"\n')
    monkeypatch.chdir(tmp_path)
    app = Pynenc(app_id="section")
    assert backend_names(app) == SQLITE
    assert "implied by sqlite_db_path" in app.conf.source_of("orchestrator_cls")


def test_one_environment_variable_reaches_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.db"
    monkeypatch.setenv("PYNENC__SQLITE_DB_PATH", str(path))
    app = Pynenc(app_id="env")
    assert backend_names(app) == SQLITE
    assert app.state_backend.path == str(path)  # type: ignore[attr-defined]
    app.close()


def test_explicit_classes_win_over_the_implied_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__ORCHESTRATOR_CLS", "MemOrchestrator")
    monkeypatch.setenv("PYNENC__BROKER_CLS", "MemBroker")
    monkeypatch.setenv("PYNENC__STATE_BACKEND_CLS", "MemStateBackend")
    app = Pynenc(app_id="explicit", config_values={"sqlite_db_path": str(tmp_path / "unused.db")})
    assert backend_names(app) == MEMORY
    assert app.use_shared_backend_default() is None
    assert backend_names(app) == MEMORY


def test_shared_backend_default_switches_to_a_file_named_after_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = Pynenc(app_id="orders")
    assert backend_names(app) == MEMORY
    setting = app.use_shared_backend_default()
    expected = tmp_path.resolve() / "orders.db"
    assert setting == f"PYNENC__SQLITE_DB_PATH={shlex.quote(str(expected))}"
    assert backend_names(app) == SQLITE
    register_one(app, "from-supervisor-side")
    # a caller given the printed setting (from another directory) reaches the same backend
    name, _, value = setting.partition("=")
    monkeypatch.setenv(name, shlex.split(value)[0])
    monkeypatch.chdir(tmp_path.parent)
    caller = Pynenc(app_id="orders")
    assert backend_names(caller) == SQLITE
    assert caller.orchestrator.get_status("from-supervisor-side") is not None
    # already switched: nothing more to do
    assert app.use_shared_backend_default() is None
    app.close()
    caller.close()


def test_shared_backend_default_keeps_a_configured_backend(tmp_path: Path) -> None:
    app = PynencBuilder().app_id("configured").sqlite(str(tmp_path / "mine.db")).build()
    assert app.use_shared_backend_default() is None
    assert app.conf.sqlite_db_path == str(tmp_path / "mine.db")
    redis_app = PynencBuilder().app_id("r").redis(url="redis://localhost:1").build()
    assert redis_app.use_shared_backend_default() is None
    assert redis_app.conf.orchestrator_cls == "RedisOrchestrator"


def test_moving_to_redis_is_one_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pynenc.sqlite]\nsqlite_db_path = "dev.db"\n')
    monkeypatch.chdir(tmp_path)
    assert Pynenc(app_id="moving").conf.orchestrator_cls == "SQLiteOrchestrator"
    monkeypatch.setenv("PYNENC__REDIS_URL", "redis://cache:6379/0")
    conf = Pynenc(app_id="moving").conf
    assert (conf.orchestrator_cls, conf.broker_cls, conf.state_backend_cls) == (
        "RedisOrchestrator",
        "RedisBroker",
        "RedisStateBackend",
    )
    assert "implied by redis_url" in conf.source_of("broker_cls")
