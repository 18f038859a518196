"""The Redis backend's connection: retries, script calls, calls sent ahead, subscribers.

URL forms (setting ``redis_url``): ``redis://[:password@]host:port/db``,
``rediss://...`` (TLS) and ``redis+cluster://host:port`` (Redis Cluster; the
address of any node, the others are discovered). Without a URL the
``redis_host``/``redis_port``/``redis_db``/``redis_password``/``redis_ssl``
settings are used. The password is never logged: :meth:`RedisConnection.redacted_url`.

One :class:`RedisConnection` per app and process: after ``fork`` the pool is
re-created (checked with ``os.getpid()``). Every command goes through
:meth:`RedisConnection.call`, which retries on connection errors and timeouts
with backoff for up to ``retry_seconds`` so a runner survives a Redis restart.

Replies kept for later (:meth:`RedisConnection.send_ahead`, pipelined single
registrations) are read before any other command of the process is sent
(:meth:`RedisConnection.settle`, called by ``call`` and ``send``) and at exit, so
whatever this process does next sees what it sent before.

Beside it: :mod:`pynenc.redis_conn` (the client for one server: sockets, replies),
:mod:`pynenc.redis_wire` (commands packed by pynenc), :mod:`pynenc.redis_scripts` (the Lua
scripts) and :mod:`pynenc.redis_watch` (the final-channel subscriber). redis-py is used
only for Redis Cluster.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pynenc.exceptions import (
    BackendUnavailableError,
    ConfigurationError,
    InvocationStatusTransitionError,
    PynencError,
    RegistrationError,
)
from pynenc.redis_conn import Client, NoScriptError, RedisConnectionError, RedisReplyError, is_not_loaded, parse_url
from pynenc.redis_scripts import load_library, load_scripts
from pynenc.redis_watch import FinalWatcher
from pynenc.redis_wire import pack_prefix, packed_command, packed_script_call

log = logging.getLogger("pynenc.redis")
T = TypeVar("T")



#: what a lost or unreachable server raises; redis-py's errors join when a cluster is used
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, OSError)
#: an error reply (redis-py's joins when a cluster is used)
REPLY_ERRORS: tuple[type[BaseException], ...] = (RedisReplyError,)
NOSCRIPT_ERRORS: tuple[type[BaseException], ...] = (NoScriptError,)


def _redis_py() -> Any:
    """redis-py, imported only for Redis Cluster (about 7 MiB a process); its errors are caught too."""
    global CONNECTION_ERRORS, REPLY_ERRORS, NOSCRIPT_ERRORS
    import redis
    import redis.cluster

    if redis.exceptions.ConnectionError not in CONNECTION_ERRORS:
        CONNECTION_ERRORS += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        REPLY_ERRORS += (redis.exceptions.ResponseError,)
        NOSCRIPT_ERRORS += (redis.exceptions.NoScriptError,)
    return redis


def _redis_py_options() -> dict[str, Any]:
    """redis-py's own retries are off (call() retries with our backoff and deadline); its
    version is given, else it looks it up in package metadata on every new connection."""
    redis = _redis_py()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {"decode_responses": True, "retry": Retry(NoBackoff(), 0)}
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7 knows only lib_version
        options["lib_version"] = redis.__version__
    else:
        options["driver_info"] = DriverInfo(lib_version=redis.__version__)
    return options


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_TRANSITION_ERROR = re.compile(r"PYNENC -3 (\S+) (\S+) (\S+)")
_SCRIPT_ERROR = re.compile(r"PYNENC -\d+ (.*)")
_warned_policy: set[str] = set()


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_from_settings(conf: Any) -> str:
    if conf.redis_url:
        return str(conf.redis_url)
    scheme = "rediss" if conf.redis_ssl else "redis"
    auth = f":{conf.redis_password}@" if conf.redis_password else ""
    return f"{scheme}://{auth}{conf.redis_host}:{conf.redis_port}/{conf.redis_db}"


def preload_process() -> None:
    """What each process would otherwise do on its first connection, done before a fork.

    Reading and hashing the scripts, and the codec socket.getaddrinfo imports for a host
    name, cost a freshly forked runner about 1.5 MiB of private pages when done there.
    """
    load_scripts()
    load_library()
    "localhost".encode("idna")


class RedisConnection:
    """A Redis (or Redis Cluster) client for one process, with retries and the scripts."""

    #: How long a command keeps retrying while Redis is unreachable.
    retry_seconds = 30.0

    def __init__(self, url: str, retry_seconds: float | None = None, functions: bool = True) -> None:
        self.url = url
        #: run the scripts as the Functions library (FCALL); False: EVALSHA (also when the
        #: server turns out to have no FUNCTION command, Redis before 7)
        self.functions = self.wants_functions = functions
        if retry_seconds is not None:
            self.retry_seconds = retry_seconds
        scheme = urlsplit(url).scheme
        self.is_cluster = scheme in CLUSTER_SCHEMES
        self.tls = scheme.startswith("rediss")
        if scheme not in ("redis", "rediss", "unix", *CLUSTER_SCHEMES):
            raise ConfigurationError(
                f"redis_url {redact(url)!r}: unknown scheme {scheme!r}; use redis://, rediss://, "
                "redis+cluster:// or rediss+cluster://"
            )
        if not self.is_cluster:
            parse_url(url)  # a bad host, port, database or option is refused here, not in a runner
        self.scripts = load_scripts()
        self.library = load_library()
        self._pid = -1
        self._client: Any = None
        self._lock = threading.Lock()
        self._watchers: dict[str, FinalWatcher] = {}
        self._loaded_pid = -1
        #: (script, keys) -> the packed start of its FCALL (or EVALSHA) command
        self._packed: dict[tuple[str, tuple[str | bytes, ...]], bytes] = {}
        self._script_connections: Client | None = None
        #: calls sent ahead (send_ahead) whose replies are unread, in order, on _ahead_connection
        self._unsettled: list[_SentAhead] = []
        self._ahead_connection: Any = None
        self._settle_lock = threading.RLock()
        self._settling = False
        _live.add(self)

    def _after_fork_in_child(self) -> None:
        # The parent's sockets, threads and possibly held lock are not ours: start afresh.
        self._lock = threading.Lock()
        self._client = None
        self._pid = -1
        self._loaded_pid = -1
        self._watchers = {}
        self._script_connections = None
        # the parent reads its own pending replies; their sockets are not ours
        self._unsettled = []
        self._ahead_connection = None
        self._settle_lock = threading.RLock()
        self._settling = False

    def redacted_url(self) -> str:
        return redact(self.url)

    def _build(self) -> Any:
        if not self.is_cluster:
            return Client(self.url, socket_timeout=10.0, connect_timeout=5.0, health_check_interval=15.0)
        return _redis_py().cluster.RedisCluster(
            socket_timeout=10.0, socket_connect_timeout=5.0, **self._cluster_node_options()
        )

    def _cluster_node_options(self) -> dict[str, Any]:
        """redis-py's options for the cluster node in the URL (the others are discovered)."""
        parts = urlsplit(self.url)
        return {
            "host": parts.hostname or "localhost",
            "port": parts.port or 6379,
            "username": parts.username or None,
            "password": parts.password,
            "ssl": self.tls,
            **_redis_py_options(),
        }

    def pubsub_client(self) -> Any:
        """A plain client for subscribing. On a cluster any node will do: PUBLISH reaches every node.

        A silently dead subscription (no RST) is noticed by a PING after 15 s of silence,
        then made again.
        """
        if not self.is_cluster:
            return Client(self.url, socket_timeout=None, connect_timeout=5.0, health_check_interval=15.0)
        return _redis_py().Redis(socket_connect_timeout=5.0, health_check_interval=15, **self._cluster_node_options())

    @property
    def client(self) -> Any:
        if self._pid != os.getpid() or self._client is None:
            with self._lock:
                if self._pid != os.getpid() or self._client is None:
                    self._client = self._build()
                    if not self.is_cluster:
                        self._script_connections = self._client
                    self._pid = os.getpid()
        return self._client

    def check(self) -> None:
        """Fail fast with a clear error when Redis cannot be reached; warn about eviction."""
        try:
            self.client.ping()
        except CONNECTION_ERRORS as exc:
            raise BackendUnavailableError(
                f"cannot connect to Redis at {self.redacted_url()}: {exc} "
                "(is redis-server running? check the redis_url / redis_host settings)"
            ) from None
        self.preload_scripts()
        if self.url in _warned_policy:
            return
        _warned_policy.add(self.url)
        try:
            config = self.client.config_get("maxmemory-policy")
            if isinstance(config, dict) and "maxmemory-policy" not in config and config:
                config = next(iter(config.values()))
            policy = config.get("maxmemory-policy") if isinstance(config, dict) else None
        except Exception:  # CONFIG may be disabled (managed Redis)
            return
        if policy and policy != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy=%s: it may evict pynenc keys and lose invocations; use noeviction",
                self.redacted_url(),
                policy,
            )

    def preload_scripts(self) -> None:
        """Load the scripts once per process: FUNCTION LOAD of the library (a server that has
        it answers at once), or SCRIPT LOAD of each for EVALSHA. On a cluster: every primary.

        Without it the first call of each script pays a not-loaded round trip and a compile,
        which makes that first transition much slower than the ones already loaded.
        """
        if self._loaded_pid == os.getpid():
            return
        self.call(self._load)
        self._loaded_pid = os.getpid()

    def _load(self, client: Any) -> None:
        if self.functions:
            try:
                self._load_library(client)
                return
            except REPLY_ERRORS as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self.functions = False  # Redis before 7: the same Lua, one script per call
                self._packed.clear()
                log.info("Redis at %s has no FUNCTION command: scripts run by EVALSHA", self.redacted_url())
        if self.is_cluster:
            for script in self.scripts.values():
                client.script_load(script.source)
            return
        packed = b"".join(packed_command(("SCRIPT", "LOAD", script.source)) for script in self.scripts.values())
        connection = client.send(packed)  # pipelined: one round trip for all
        for _ in range(len(self.scripts) - 1):
            connection.read_response()
        client.read(connection)

    def _load_library(self, client: Any) -> None:
        """FUNCTION LOAD the library; one of this name is this very code (the name is its digest)."""
        try:
            if self.is_cluster:
                client.function_load(self.library.source)  # redis-py sends it to every primary
            else:
                client.execute_command("FUNCTION", "LOAD", self.library.source)
        except REPLY_ERRORS as exc:
            if "already exists" not in str(exc):
                raise

    def send_ahead(self, name: str, keys: Sequence[str | bytes], args: list[Any], what: str) -> None:
        """Send a script call and return before its reply: it is read by :meth:`settle`.

        The calls sent ahead share one connection (pipelined, so they are applied in the
        order sent) and at most ``AHEAD_WINDOW`` replies are unread at a time. Like
        :meth:`send`, the script must be safe to repeat after a lost reply. ``what`` names
        the call in the error raised if Redis refuses it.
        """
        connections = self._connections()
        if connections is None:  # a cluster client routes by slot: run it now
            self.run(name, keys, args)
            return
        with self._settle_lock:
            if len(self._unsettled) >= AHEAD_WINDOW:
                self.settle()
            if self._ahead_connection is None:
                self._ahead_connection = connections.take()
            self._unsettled.append(_SentAhead(name, keys, args, what))
            try:
                command = packed_script_call(self._prefix(name, keys), len(keys), args)
                self._ahead_connection.send_packed_command([command])
            except CONNECTION_ERRORS:
                self.settle()  # what this connection held (this call too) is sent again by run

    def settle(self, then: bytes | None = None) -> Any:
        """Read the replies of the calls sent ahead, in order.

        Called before each other command of this process (``call``, ``send``), so nothing
        the process does next can overtake what it sent ahead on the other connection. A
        reply lost with its connection, or NOSCRIPT, sends that call again with :meth:`run`
        (its retries apply). A refusal (a script error, or Redis out of memory) raises
        :class:`RegistrationError` naming the calls, after every reply was read.

        ``then``: a packed read-only command to send behind them on their connection, so
        one round trip reads everything; its reply is returned, or ``NOT_SENT`` when it
        was not sent or its reply is unusable (lost, an error): the caller sends it itself.
        """
        if not self._unsettled:
            return NOT_SENT
        failures: list[str] = []
        result: Any = NOT_SENT
        with self._settle_lock:
            # Others wait on the lock until every reply is read; a call this makes again
            # (run, which settles first) must not re-enter.
            if self._settling or not self._unsettled:
                return NOT_SENT
            self._settling = True
            connection = self._ahead_connection
            lost = connection is None
            if then is not None and not lost:
                try:
                    connection.send_packed_command([then])
                except CONNECTION_ERRORS:
                    then, lost = None, True
                    connection.disconnect()
            try:
                for sent in self._unsettled:
                    try:
                        if not lost:
                            try:
                                connection.read_response()
                                continue
                            except NoScriptError:
                                pass  # the script cache was flushed: run loads it again
                            except CONNECTION_ERRORS:
                                lost = True
                                connection.disconnect()
                        self.run(sent.name, sent.keys, sent.args)
                    except REPLY_ERRORS as exc:
                        failures.append(f"{sent.what}: {_translate(exc)}")
                    except PynencError as exc:
                        failures.append(f"{sent.what}: {exc}")
                if then is not None and not lost:
                    try:
                        result = connection.read_response()
                    except REPLY_ERRORS:
                        result = NOT_SENT  # read whole; the caller's own call reports it
                    except CONNECTION_ERRORS:
                        connection.disconnect()
                if connection is not None and self._script_connections is not None:
                    self._script_connections.give(connection)
            except BaseException:
                if connection is not None:
                    connection.disconnect()  # replies may be left unread on it
                raise
            finally:
                self._unsettled = []
                self._ahead_connection = None
                self._settling = False
        for failure in failures:
            log.error("not applied: %s", failure)
        if failures:
            raise RegistrationError("not applied: " + "; ".join(failures))
        return result

    def call(self, func: Callable[[Any], T]) -> T:
        """Run ``func(client)``, retrying with backoff on connection errors for ``retry_seconds``."""
        self.settle()
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                return func(self.client)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailableError(
                        f"Redis at {self.redacted_url()} unreachable for {self.retry_seconds:g} s: {exc}"
                    ) from None
                log.warning("Redis at %s unreachable, retrying in %.2f s: %s", self.redacted_url(), delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _prefix(self, name: str, keys: Sequence[str | bytes]) -> bytes:
        """FCALL and function name (or EVALSHA and sha) and KEYS of a script call, packed once
        (scripts run on every transition)."""
        cache_key = (name, tuple(keys))
        prefix = self._packed.get(cache_key)
        if prefix is None:
            script = self.scripts[name]
            if self.functions:
                prefix = pack_prefix(b"FCALL", script.function, keys)
            else:
                prefix = pack_prefix(b"EVALSHA", script.sha, keys)
            self._packed[cache_key] = prefix
        return prefix

    def _connections(self) -> Client | None:
        """This process's script connections (None on a cluster, where redis-py routes by slot)."""
        self.client  # noqa: B018 (builds the client, and its script connections, in a new process)
        return self._script_connections

    def send(self, name: str, keys: Sequence[str | bytes], args: list[Any]) -> Callable[[], Any]:
        """Send a script call now and return the function that reads its reply (call it once).

        The connection is held until the reply is read. When sending fails, or the reply is
        NOSCRIPT or lost with its connection, the call is made again with :meth:`run` (so its
        retries apply): scripts called this way must be safe to repeat after a lost reply, as
        every transition is (a repeat finds the work done).
        """
        connections = self._connections()
        if connections is None:  # a cluster client: run it now
            result = self.run(name, keys, args)
            return lambda: result
        self.settle()
        try:
            connection = connections.send(packed_script_call(self._prefix(name, keys), len(keys), args))
        except CONNECTION_ERRORS:
            result = self.run(name, keys, args)
            return lambda: result

        def reply() -> Any:
            try:
                return connections.read(connection)
            except CONNECTION_ERRORS + NOSCRIPT_ERRORS:
                return self.run(name, keys, args)  # lost, or the script cache was flushed: run again
            except REPLY_ERRORS as exc:
                raise _translate(exc) from None

        return reply

    def run(self, name: str, keys: Sequence[str | bytes], args: list[Any]) -> Any:
        """Run a script by name (FCALL or EVALSHA), loading it again when the server lost it."""
        script = self.scripts[name]
        connections = self._connections()
        if self._unsettled and name in READ_ONLY_SCRIPTS and connections is not None:
            result = self.settle(then=packed_script_call(self._prefix(name, keys), len(keys), args))
            if result is not NOT_SENT:  # read behind the calls sent ahead: one round trip for all
                return result

        def attempt(client: Any) -> Any:
            try:
                try:
                    return self._call_script(client, connections, script, keys, args)
                except NOSCRIPT_ERRORS:
                    return self._reload_and_call(client, connections, script, keys, args)
            except REPLY_ERRORS as exc:
                if is_not_loaded(str(exc)):  # a cluster node that lost its scripts mid-call
                    return self._reload_and_call(client, connections, script, keys, args)
                raise _translate(exc) from None

        return self.call(attempt)

    def _call_script(self, client: Any, connections: Client | None, script: Any, keys: Any, args: list[Any]) -> Any:
        if connections is not None:
            command = packed_script_call(self._prefix(script.name, keys), len(keys), args)
            return connections.read(connections.send(command))
        if self.functions:
            return client.fcall(script.function, len(keys), *keys, *args)
        return client.evalsha(script.sha, len(keys), *keys, *args)

    def _reload_and_call(self, client: Any, connections: Client | None, script: Any, keys: Any, args: list[Any]) -> Any:
        """After a flush of the server's scripts or functions (or a node that never had them)."""
        if self.functions:
            self._load_library(client)
            return self._call_script(client, connections, script, keys, args)
        return client.eval(script.source, len(keys), *keys, *args)  # EVAL caches it again

    def command(self, *args: str | bytes | int | float) -> Any:
        """One plain read-only command, e.g. ``command("HMGET", key, *fields)``, with :meth:`call`'s retries.

        For reads on hot paths: sent packed on a kept script connection, the reply as hiredis
        parses it (strings, lists, None), without redis-py's per-command pool bookkeeping.
        """
        connections = self._connections()
        if connections is None:  # a cluster client routes by slot
            return self.call(lambda client: client.execute_command(*args))
        packed = packed_command(args)
        if self._unsettled:
            result = self.settle(then=packed)  # read-only: behind the calls sent ahead, one round trip
            if result is not NOT_SENT:
                return result
        return self.call(lambda _client: connections.read(connections.send(packed)))

    def watcher(self, channel: str) -> FinalWatcher:
        """The process's subscriber to ``channel`` (started on first use, re-created after fork)."""
        with self._lock:
            watcher = self._watchers.get(channel)
            if watcher is None or watcher.pid != os.getpid():
                watcher = FinalWatcher(self, channel)
                self._watchers[channel] = watcher
            return watcher

    def close(self) -> None:
        with self._lock:
            watchers, self._watchers = list(self._watchers.values()), {}
        for watcher in watchers:
            watcher.stop()
        client, self._client = self._client, None
        connections, self._script_connections = self._script_connections, None
        if connections is not None and self._pid == os.getpid():
            for connection in connections.idle:
                connection.disconnect()
        if client is not None and self._pid == os.getpid():
            try:
                client.close()
            except Exception:
                pass


#: calls sent ahead whose replies may be unread at once (then the sender reads them)
AHEAD_WINDOW = 64
#: scripts that change nothing: sent behind the calls sent ahead, on their connection
READ_ONLY_SCRIPTS = frozenset({"read"})
#: what settle(then=...) returns when it did not send (or could not use the reply of) ``then``
NOT_SENT: Any = object()


class _SentAhead:
    """A call sent by :meth:`RedisConnection.send_ahead`, kept to send again if its reply is lost."""

    __slots__ = ("name", "keys", "args", "what")

    def __init__(self, name: str, keys: Sequence[str | bytes], args: list[Any], what: str) -> None:
        self.name, self.keys, self.args, self.what = name, keys, args, what


def _translate(exc: BaseException) -> BaseException:
    """Errors the scripts raise on purpose ("PYNENC <code> ...") as pynenc errors."""
    text = str(exc)
    transition = _TRANSITION_ERROR.search(text)
    if transition:
        invocation_id, current, requested = transition.groups()
        return InvocationStatusTransitionError(invocation_id, current, requested, "refused by the Redis script")
    other = _SCRIPT_ERROR.search(text)
    if other:
        return PynencError(f"Redis script refused the call: {other.group(1)}")
    return exc


_live: weakref.WeakSet[RedisConnection] = weakref.WeakSet()


@atexit.register
def _settle_at_exit() -> None:
    """Read the replies still pending, so a refused registration is at least logged."""
    for connection in list(_live):
        if connection._pid == os.getpid():
            try:
                connection.settle()
            except Exception:  # noqa: BLE001 - settle logged it; nothing else can be done at exit
                pass


def _reset_after_fork() -> None:
    global _by_app_lock
    _by_app_lock = threading.Lock()
    for connection in list(_live):
        connection._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)

_by_app: weakref.WeakKeyDictionary[Any, RedisConnection] = weakref.WeakKeyDictionary()
_by_app_lock = threading.Lock()


def connection_for(app: Any) -> RedisConnection:
    """The connection shared by the Redis components of ``app`` (one per app and URL)."""
    url = url_from_settings(app.conf)
    retry = float(app.conf.redis_retry_seconds)
    functions = bool(app.conf.redis_functions)
    with _by_app_lock:
        connection = _by_app.get(app)
        if connection is None or (connection.url, connection.retry_seconds, connection.wants_functions) != (
            url,
            retry,
            functions,
        ):
            if connection is not None:
                connection.close()
            connection = RedisConnection(url, retry, functions)
            _by_app[app] = connection
        return connection
