"""What every system's tasks share: the Redis URL and the timestamp records.

Tasks prove that they ran by pushing ``time.time()`` onto a Redis list, so the
harness measures by the tasks' own clocks (one machine, one wall clock) and not
by sleeping or by any system's result API:

- ``bench:done:<tag>``  one entry per finished no-op task or fan-out parent;
- ``bench:err:<tag>``   one entry per fan-out parent that failed (``Type: message``).

Each record costs every system the same single round trip to Redis.
Imported inside each peer's virtualenv: only the standard library and ``redis``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

REDIS_URL_ENV = "BENCH_REDIS_URL"  # same value as bench.registry.REDIS_URL_ENV

_client: Any = None
_client_pid: int | None = None


def redis_url() -> str:
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        raise RuntimeError(f"{REDIS_URL_ENV} is not set: the bench harness sets it for workers and clients")
    return url


def client() -> Any:
    """A Redis client for this process (a new one after fork: sockets must not be shared)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(redis_url())
        _client_pid = os.getpid()
    return _client


def done_key(tag: str) -> str:
    return f"bench:done:{tag}"


def err_key(tag: str) -> str:
    return f"bench:err:{tag}"


def record_done(tag: str) -> None:
    client().rpush(done_key(tag), repr(time.time()))


def error_text(exc: BaseException) -> str:
    """How a failed parent's error is recorded (``Type: message``, capped)."""
    return f"{type(exc).__name__}: {exc}"[:500]


def record_error(tag: str, exc: BaseException) -> None:
    client().rpush(err_key(tag), error_text(exc))


def fan_in(tag: str, children_results: Callable[[], Iterable[int]]) -> int:
    """A fan-out parent's body: enqueue and wait for the children (the callable), sum, record the end."""
    try:
        total = sum(children_results())
    except Exception as exc:
        record_error(tag, exc)
        raise
    record_done(tag)
    return int(total)


def child_tag(tag: str) -> str:
    """Tag under which the children of a fan-out record themselves."""
    return f"{tag}:child"
