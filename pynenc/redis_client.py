"""The Redis backend's connection: retries, script calls, calls sent ahead, subscribers.

URL forms (setting ``redis_url``): ``redis://[:password@]host:port/db``,
``rediss://...`` (TLS) and ``redis+cluster://host:port`` (Redis Cluster; the
address of any node, the others are discovered). Without a URL the
``redis_host``/``redis_port``/``redis_db``/``redis_password``/``redis_ssl``
settings are used. The password is never logged: :meth:`RedisConnection.redacted_url`.

One :class:`RedisConnection` per app and process: after ``fork`` the pool is
re-created (checked against ``pynenc.forks.pid``). Every command goes through
:meth:`RedisConnection.call`, which retries on connection errors and timeouts
with backoff for up to ``retry_seconds`` so a runner survives a Redis restart.

Replies kept for later (:meth:`RedisConnection.send_ahead`, pipelined single
registrations: :mod:`pynenc.redis_ahead`) are read before any other command of the
process is sent (:meth:`RedisConnection.settle`, called by ``call`` and ``send``) and at
exit, so whatever this process does next sees what it sent before.

Beside it: :mod:`pynenc.redis_conn` (the client for one server: sockets, replies),
:mod:`pynenc.redis_errors` (what is caught, redis-py's errors joining for a cluster),
:mod:`pynenc.redis_wire` (commands packed by pynenc), :mod:`pynenc.redis_scripts` (the Lua
scripts) and :mod:`pynenc.redis_watch` (the final-channel subscriber). redis-py is used
only for Redis Cluster.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pynenc import forks, redis_cluster
from pynenc import redis_errors as errors
from pynenc.exceptions import BackendUnavailableError, ConfigurationError
from pynenc.redis_ahead import NOT_SENT, CallsAhead, SentAhead
from pynenc.redis_conn import Client, is_not_loaded, parse_url
from pynenc.redis_scripts import Script, load_library, load_scripts
from pynenc.redis_watch import FinalWatcher
from pynenc.redis_wire import pack_prefix, packed_command, packed_script_call, sent_again

log = logging.getLogger("pynenc.redis")
T = TypeVar("T")


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
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


#: on a cluster, a fresh client replaces one that failed this many calls in a row
CLUSTER_REFRESH_AFTER = 4


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
        #: on a cluster: how many subscriptions were made (each one asks the next known node)
        self._subscriptions = 0
        #: calls sent ahead (send_ahead) whose replies are unread
        self.ahead = CallsAhead(self.run)
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
        self.ahead = CallsAhead(self.run)

    def redacted_url(self) -> str:
        return redact(self.url)

    def _build(self) -> Any:
        if not self.is_cluster:
            return Client(self.url, socket_timeout=10.0, connect_timeout=5.0, health_check_interval=15.0)
        return redis_cluster.command_client(self.url, self.tls)

    def pubsub_client(self) -> Any:
        """A plain client for subscribing (one per subscription; on a cluster, see
        :func:`pynenc.redis_cluster.subscriber_client`). A silently dead subscription (no RST)
        is noticed by a PING after 15 s of silence, then made again."""
        if not self.is_cluster:
            return Client(self.url, socket_timeout=None, connect_timeout=5.0, health_check_interval=15.0)
        turn, self._subscriptions = self._subscriptions, self._subscriptions + 1
        return redis_cluster.subscriber_client(self.url, self.tls, self.client, turn)

    @property
    def client(self) -> Any:
        if self._pid != forks.pid or self._client is None:
            with self._lock:
                if self._pid != forks.pid or self._client is None:
                    self._client = self._build()
                    if not self.is_cluster:
                        self._script_connections = self._client
                    self._pid = forks.pid
        return self._client

    def check(self) -> None:
        """Fail fast with a clear error when Redis cannot be reached; warn about eviction."""
        try:
            self.client.ping()
        except errors.CONNECTION_ERRORS as exc:
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
        if self._loaded_pid == forks.pid:
            return
        self.call(self._load)
        self._loaded_pid = forks.pid

    def _load(self, client: Any) -> None:
        if self.functions:
            try:
                self._load_library(client)
                return
            except errors.REPLY_ERRORS as exc:
                text = str(exc)
                if "unknown command" not in text.lower() and "NOPERM" not in text:
                    raise
                # Redis before 7, or an ACL that forbids FUNCTION: the same Lua, one script per call
                self.functions = False
                self._packed.clear()
                log.info("Redis at %s refused FUNCTION LOAD (%s): scripts run by EVALSHA", self.redacted_url(), text)
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
        """FUNCTION LOAD the library; one of this name is this very code (the name is its digest).

        On a cluster node by node: sent to all primaries at once, redis-py stops at the first
        node that answers "already exists", and the nodes after it (one added later, one
        flushed) would stay without the library.
        """
        source = self.library.source
        targets = client.get_primaries() if self.is_cluster else [None]
        for node in targets:
            try:
                if node is None:
                    client.execute_command("FUNCTION", "LOAD", source)
                else:
                    client.execute_command("FUNCTION LOAD", source, target_nodes=node)
            except errors.REPLY_ERRORS as exc:
                if "already exists" not in str(exc):
                    raise

    def send_ahead(self, name: str, keys: Sequence[str | bytes], args: list[Any], what: str) -> None:
        """Send a script call and return before its reply: it is read by :meth:`settle`
        (see :mod:`pynenc.redis_ahead`). Like :meth:`send`, the script must be safe to repeat
        after a lost reply. ``what`` names the call in the error raised if Redis refuses it.
        """
        connections = self._connections()
        if connections is None:  # a cluster client routes by slot: run it now
            self.run(name, keys, args)
            return
        command = packed_script_call(self._prefix(name, keys), len(keys), args)
        self.ahead.send(connections, command, SentAhead(name, keys, args, what))

    def settle(self, then: bytes | None = None) -> Any:
        """Read the replies of the calls sent ahead (:meth:`CallsAhead.settle`).

        Called before each other command of this process (``call``, ``send``), so nothing
        the process does next can overtake what it sent ahead on the other connection.
        """
        if not self.ahead.unsettled:
            return NOT_SENT
        return self.ahead.settle(self._script_connections, then)

    def call(self, func: Callable[[Any], T]) -> T:
        """Run ``func(client)``, retrying with backoff on connection errors for ``retry_seconds``."""
        self.settle()
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        failures = 0
        while True:
            client = self.client
            try:
                return func(client)
            except errors.CONNECTION_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailableError(
                        f"Redis at {self.redacted_url()} unreachable for {self.retry_seconds:g} s: {exc}"
                    ) from None
                log.warning("Redis at %s unreachable, retrying in %.2f s: %s", self.redacted_url(), delay, exc)
                failures += 1
                if self.is_cluster and failures % CLUSTER_REFRESH_AFTER == 0:
                    self._fresh_cluster_client(client)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _fresh_cluster_client(self, failing: Any) -> None:
        """Replace a cluster client that keeps failing with a new one, started from every node
        the old one knew (and the URL's): a primary died and redis-py's view of the cluster
        can stay on it after its replica took over (seen under concurrent use)."""
        nodes = redis_cluster.known_nodes(self.url, failing)
        try:
            fresh = redis_cluster.command_client(self.url, self.tls, nodes)
        except Exception as exc:  # noqa: BLE001 - no node answers yet: keep the old one, retry later
            log.debug("no fresh cluster client yet: %s", exc)
            return
        with self._lock:
            if self._client is not failing:  # another thread replaced it already
                fresh.close()
                return
            self._client = fresh
        # The old client is not closed: other threads may be inside a call on it (closing it
        # under them broke redis-py's node bookkeeping); its sockets close when it is freed.
        log.warning("Redis Cluster at %s: started a fresh client from %d known nodes", self.redacted_url(), len(nodes))

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

    def send(
        self, name: str, keys: Sequence[str | bytes], args: list[Any], after: Sequence[Any] | None = None
    ) -> Callable[[], Any]:
        """Send a script call now and return the function that reads its reply (call it once).

        The connection is held until the reply is read. When sending fails, or the reply is
        NOSCRIPT or lost with its connection, the call is made again with :meth:`run` (so its
        retries apply): scripts called this way must be safe to repeat after a lost reply, as
        every transition is (a repeat finds the work done).

        ``after``: a blocking command (e.g. ``BLPOP``) sent first, in the same write. Redis reads
        a blocked client's next command only once the blocking one has returned, so the script
        runs the moment the wait ends, and the caller wakes once, with the script's reply in
        hand, instead of waking, sending the script and waiting again. The blocking command's
        reply only says when: it is dropped.
        """
        connections = self._connections()
        if connections is None:  # a cluster client: routed by slot, one command at a time
            if after is not None:
                self.call(lambda client: client.execute_command(*after))
            result = self.run(name, keys, args)
            return lambda: result
        self.settle()
        packed = packed_script_call(self._prefix(name, keys), len(keys), args)
        if after is not None:
            packed = packed_command(after) + packed
        try:
            connection = connections.send(packed)
        except errors.CONNECTION_ERRORS:
            result = self.run(name, keys, sent_again(args))  # part of it may have reached Redis
            return lambda: result

        def reply() -> Any:
            try:
                if after is not None:
                    _drop_reply(connections, connection)
                return connections.read(connection)
            except errors.NOSCRIPT_ERRORS:
                return self.run(name, keys, args)  # the script cache was flushed: it did not run
            except errors.CONNECTION_ERRORS:
                return self.run(name, keys, sent_again(args))  # lost: it may have run
            except errors.REPLY_ERRORS as exc:
                raise errors.translate(exc) from None

        return reply

    def run(self, name: str, keys: Sequence[str | bytes], args: list[Any]) -> Any:
        """Run a script by name (FCALL or EVALSHA), loading it again when the server lost it."""
        script = self.scripts[name]
        connections = self._connections()
        if self.ahead.unsettled and name in READ_ONLY_SCRIPTS and connections is not None:
            result = self.settle(then=packed_script_call(self._prefix(name, keys), len(keys), args))
            if result is not NOT_SENT:  # read behind the calls sent ahead: one round trip for all
                return result

        attempts = 0

        def attempt(client: Any) -> Any:
            nonlocal attempts
            attempts += 1  # a connection error may have come after the call ran: mark it again
            call_args = args if attempts == 1 else sent_again(args)
            try:
                return self._call_script(client, connections, script, keys, call_args)
            except errors.REPLY_ERRORS as exc:
                # NoScriptError (ours, redis-py's), or redis-py's plain reply for a function
                if isinstance(exc, errors.NOSCRIPT_ERRORS) or is_not_loaded(str(exc)):
                    return self._reload_and_call(client, connections, script, keys, call_args)
                raise errors.translate(exc) from None

        return self.call(attempt)

    def _call_script(
        self, client: Any, connections: Client | None, script: Script, keys: Sequence[str | bytes], args: list[Any]
    ) -> Any:
        if connections is not None:
            command = packed_script_call(self._prefix(script.name, keys), len(keys), args)
            return connections.read(connections.send(command))
        if self.functions:
            return client.fcall(script.function, len(keys), *keys, *args)
        return client.evalsha(script.sha, len(keys), *keys, *args)

    def _reload_and_call(
        self, client: Any, connections: Client | None, script: Script, keys: Sequence[str | bytes], args: list[Any]
    ) -> Any:
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
        if self.ahead.unsettled:
            result = self.settle(then=packed)  # read-only: behind the calls sent ahead, one round trip
            if result is not NOT_SENT:
                return result
        return self.call(lambda _client: connections.read(connections.send(packed)))

    def running_watcher(self, channel: str) -> FinalWatcher | None:
        """The process's subscriber to ``channel`` if it was started (None: none is made)."""
        watcher = self._watchers.get(channel)
        return watcher if watcher is not None and watcher.pid == forks.pid else None

    def watcher(self, channel: str) -> FinalWatcher:
        """The process's subscriber to ``channel`` (started on first use, re-created after fork)."""
        with self._lock:
            watcher = self._watchers.get(channel)
            if watcher is None or watcher.pid != forks.pid:
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
        if connections is not None and self._pid == forks.pid:
            for connection in connections.idle:
                connection.disconnect()
        if client is not None and self._pid == forks.pid:
            try:
                client.close()
            except Exception:
                pass


#: scripts that change nothing: sent behind the calls sent ahead, on their connection
READ_ONLY_SCRIPTS = frozenset({"read"})

_live: weakref.WeakSet[RedisConnection] = weakref.WeakSet()


@atexit.register
def _settle_at_exit() -> None:
    """Read the replies still pending, so a refused registration is at least logged."""
    for connection in list(_live):
        if connection._pid == forks.pid:
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


def _drop_reply(connections: Client, connection: Any) -> None:
    """Read and drop the next reply on ``connection``, which stays held for the one behind it
    (an error reply is dropped too: it concerns that command only)."""
    try:
        connection.read_response()
    except errors.REPLY_ERRORS:
        pass
    except BaseException:
        connection.disconnect()
        connections.give(connection)
        raise
