"""Backends the behavioural suite runs on: name -> function configuring an app for it.

Each function gets the app and the pytest request (to reach fixtures such as a
Redis server or tmp_path) and only sets the backend settings. :func:`cli_app_on`
puts the operator tests' app (``tests.cli_app.app``) on one of them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pynenc import Pynenc
from tests import cli_app


def memory(app: Pynenc, request: Any) -> None:
    app.conf.orchestrator_cls = "MemOrchestrator"
    app.conf.broker_cls = "MemBroker"
    app.conf.state_backend_cls = "MemStateBackend"


def sqlite(app: Pynenc, request: Any) -> None:
    app.conf.orchestrator_cls = "SQLiteOrchestrator"
    app.conf.broker_cls = "SQLiteBroker"
    app.conf.state_backend_cls = "SQLiteStateBackend"
    app.conf.sqlite_db_path = str(request.getfixturevalue("tmp_path") / "pynenc.db")


def redis(app: Pynenc, request: Any) -> None:
    """The session redis-server of this test process (tests/redis_servers.py); app ids keep tests apart."""
    app.conf.redis_url = request.getfixturevalue("redis_url")
    app.conf.orchestrator_cls = "RedisOrchestrator"
    app.conf.broker_cls = "RedisBroker"
    app.conf.state_backend_cls = "RedisStateBackend"


def redis6(app: Pynenc, request: Any) -> None:
    """Redis 6.2 (before Functions): the same scripts, loaded and called by EVALSHA."""
    redis(app, request)
    app.conf.redis_url = request.getfixturevalue("redis6_server").url


BACKENDS: dict[str, Callable[[Pynenc, Any], None]] = {
    "mem": memory,
    "sqlite": sqlite,
    "redis": redis,
    "redis6": redis6,
}


@contextlib.contextmanager
def cli_app_on(backend: str, request: Any, prefix: str) -> Iterator[Pynenc]:
    """tests.cli_app.app (what ``--app tests.cli_app.app`` loads) on one backend under a fresh
    app id; the module's app is shared, so what a test changes in its conf is put back."""
    app = cli_app.app
    app.conf.app_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    BACKENDS[backend](app, request)
    app.conf.logging_level = "WARNING"
    result_ttl = app.conf.result_ttl
    try:
        yield app
    finally:
        app.conf.result_ttl = result_ttl
        app.purge()
        app.reset_components()
