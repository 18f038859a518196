"""What every system's tasks share: the Redis URL and the timestamp records.

Tasks prove that they ran by pushing ``time.time()`` onto a Redis list, so the
harness measures by the tasks' own clocks (one machine, one wall clock) and not
by sleeping or by any system's result API:

- ``bench:done:<tag>``  one entry per finished no-op task or fan-out parent;
- ``bench:err:<tag>``   one entry per fan-out parent that failed (``Type: message``).

Each record costs every system the same single round trip to Redis: an ``RPUSH`` written
on a plain socket by :func:`record_done`, with the standard library only, so the
measuring instrument adds no library to any system's workers (their memory is measured).
Imported inside each peer's virtualenv; ``redis`` (redis-py) only for the measuring
client's reads (:func:`client`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

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
        import redis

        _client = redis.Redis.from_url(redis_url())
        _client_pid = os.getpid()
    return _client


def done_key(tag: str) -> str:
    return f"bench:done:{tag}"


def err_key(tag: str) -> str:
    return f"bench:err:{tag}"


class _Recorder:
    """One socket per process (and thread) that RPUSHes records and reads each reply."""

    def __init__(self) -> None:
        parts = urlsplit(redis_url())
        self.sock = socket.create_connection((parts.hostname or "localhost", parts.port or 6379), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        db = parts.path.strip("/")
        if db and db != "0":
            self.command(b"SELECT", db.encode())

    def command(self, *args: bytes) -> bytes:
        packed = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        self.sock.sendall(packed)
        reply = b""
        while not reply.endswith(b"\r\n"):  # RPUSH and SELECT answer one short line
            chunk = self.sock.recv(64)
            if not chunk:
                raise ConnectionError("Redis closed the recorder's connection")
            reply += chunk
        if reply.startswith(b"-"):
            raise RuntimeError(reply.decode(errors="replace").strip())
        return reply


_recorders: dict[tuple[int, int], _Recorder] = {}


def _push(key: str, value: str) -> None:
    owner = (os.getpid(), threading.get_ident())  # a new socket after fork, and per thread
    recorder = _recorders.get(owner)
    if recorder is None:
        recorder = _recorders[owner] = _Recorder()
    try:
        recorder.command(b"RPUSH", key.encode(), value.encode())
    except OSError:
        del _recorders[owner]  # the next record connects again
        raise


def record_done(tag: str) -> None:
    _push(done_key(tag), repr(time.time()))


def error_text(exc: BaseException) -> str:
    """How a failed parent's error is recorded (``Type: message``, capped)."""
    return f"{type(exc).__name__}: {exc}"[:500]


def record_error(tag: str, exc: BaseException) -> None:
    _push(err_key(tag), error_text(exc))


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
