"""The run's private ``redis-server`` on a free localhost port.

Modelled on tests/redis_servers.py (which needs pytest, a dev-only
dependency): no persistence, a temporary directory, readiness checked by PING
against the server's own pid with a deadline, SIGTERM then SIGKILL on stop.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from bench.registry import BenchError

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
POLL = 0.02


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def redis_cpu_seconds(url: str) -> float:
    """CPU seconds (user + system) the redis-server at ``url`` has used since it started,
    from its own ``INFO cpu`` (so no process id is needed)."""
    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class BenchRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not on PATH (apt-get install -y redis-server)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="pynenc-bench-redis-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        #: a command the server runs under (e.g. valgrind), set before start
        self.prefix: list[str] = []
        self.start_timeout = START_TIMEOUT

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def version(self) -> str:
        client = redis.Redis(host=HOST, port=self.port)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def start(self) -> Self:
        for _ in range(5):  # another process may grab the port between pick and bind
            self.port = _free_port()
            argv = [
                *self.prefix, self.binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
            ]  # fmt: skip
            log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            log.close()
            if self._ready():
                return self
            self.stop()
        raise BenchError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def _ready(self) -> bool:
        assert self.proc is not None
        probe = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if int(probe.info("server")["process_id"]) == self.proc.pid:
                        return True
                except redis.exceptions.RedisError:
                    pass
                time.sleep(POLL)
            return False
        finally:
            probe.close()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
