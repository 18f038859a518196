"""Backends the behavioural suite runs on: name -> function configuring an app for it.

Each function gets the app and the pytest request (to reach fixtures such as a
Redis server or tmp_path) and only sets the backend settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynenc import Pynenc


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
