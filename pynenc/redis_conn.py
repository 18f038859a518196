"""A small Redis client for one Redis server: sockets, RESP2 replies parsed by hiredis.

pynenc sends few kinds of commands (script calls, a handful of reads, BLPOP and one
subscription), all packed by :mod:`pynenc.redis_wire`. This module is what carries them:
a :class:`Connection` (one socket), a :class:`Client` (connections kept for reuse, and
the commands pynenc uses with the reply shapes redis-py gives them) and a
:class:`PubSub`. It exists for memory: redis-py imports its asyncio, cluster and
observability layers with it, about 7 MiB in every runner process. Redis Cluster still
goes through redis-py (imported only then, see :mod:`pynenc.redis_client`).

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, certificate
and host name verified; query options ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs=none|optional|required``, ``ssl_check_hostname``) and
``unix:///path/to/socket?db=N`` (``password`` as in the other forms). Any other query
option is refused with :class:`~pynenc.exceptions.ConfigurationError`.

Errors: :class:`RedisConnectionError` (cannot connect, connection lost; its subclass
:class:`RedisTimeoutError` when no reply came in time) and :class:`RedisReplyError`
(Redis answered with an error; :class:`NoScriptError` when the script or function
called is not loaded). A connection that
failed mid-command is closed, and reconnects on its next use.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from pynenc import forks
from pynenc.exceptions import ConfigurationError, PynencError
from pynenc.redis_wire import packed_command


class RedisConnectionError(PynencError):
    """Redis could not be reached, or the connection was lost before the reply."""


class RedisTimeoutError(RedisConnectionError):
    """No reply (or no connection) within the socket timeout."""


class RedisReplyError(PynencError):
    """Redis answered the command with an error reply (its text is the message)."""


class NoScriptError(RedisReplyError):
    """EVALSHA of a script the server does not have cached, or FCALL of a function it does not have."""


def is_not_loaded(error_text: str) -> bool:
    """Whether an error reply says the script (NOSCRIPT) or function called is not on the server."""
    # redis-py (used for a cluster) drops the "ERR " of the reply
    return error_text.startswith(("NOSCRIPT", "ERR Function not found", "Function not found"))


class _ProtocolError(RedisConnectionError):
    """The reply stream was not valid RESP (the connection is unusable)."""


_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
#: the URL options that name a file (checked to exist when the URL is parsed)
_TLS_FILE_OPTIONS = _SSL_OPTIONS[:3]
_READ_SIZE = 65536


@dataclass(frozen=True)
class Address:
    """Where and how to connect, parsed from a URL by :func:`parse_url`."""

    host: str = "localhost"
    port: int = 6379
    path: str = ""  # a unix socket's path (then host and port are unused)
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_options: dict[str, str] = field(default_factory=dict)


def parse_url(url: str) -> Address:
    """The :class:`Address` of ``redis://``, ``rediss://`` and ``unix://`` URLs."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"redis_url: unknown scheme {parts.scheme!r}; use redis://, rediss:// or unix://")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    db_text = query.pop("db", None)
    if parts.scheme != "unix" and parts.path not in ("", "/"):
        db_text = parts.path.lstrip("/")
    tls_options = {name: query.pop(name) for name in _SSL_OPTIONS if name in query}
    reqs = tls_options.get("ssl_cert_reqs", "required").lower()
    if reqs not in ("none", "optional", "required"):
        raise ConfigurationError(f"redis_url: ssl_cert_reqs must be none, optional or required, got {reqs!r}")
    if query:
        raise ConfigurationError(f"redis_url: unknown option(s) {sorted(query)}; known: db, {', '.join(_SSL_OPTIONS)}")
    for name in _TLS_FILE_OPTIONS:
        if name in tls_options and not os.path.isfile(tls_options[name]):
            raise ConfigurationError(f"redis_url: {name}={tls_options[name]!r} is not a readable file")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ConfigurationError(f"redis_url: the database must be a number, got {db_text!r}") from None
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigurationError(f"redis_url: {exc}") from None
    return Address(
        host=parts.hostname or "localhost",
        port=port,
        path=unquote(parts.path) if parts.scheme == "unix" else "",
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss",
        tls_options=tls_options,
    )


def pack(*args: Any) -> bytes:
    """A command as one RESP array."""
    return packed_command(args)


def _set_kernel_timeout(sock: socket.socket, seconds: float | None) -> None:
    """Make ``sock`` blocking, with ``seconds`` as the kernel's send and receive timeouts.

    Python implements a socket timeout by a poll() before every send and receive: two more
    system calls per command (measured: about 3 us of the ~65 us a busy runner spends per
    no-op task). The kernel's SO_RCVTIMEO/SO_SNDTIMEO bound a blocked call the same way
    without them; a call that times out fails with EAGAIN (BlockingIOError). TLS sockets
    keep Python's timeout (the ssl module expects it).
    """
    sock.settimeout(None)
    if seconds is None or seconds <= 0:
        return
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class Connection:
    """One socket to Redis. Not shared between threads: take it, use it, give it back.

    Connects on first use (and again after :meth:`disconnect`); AUTH and SELECT, when the
    address asks for them, are sent together (one round trip). With
    ``health_check_interval``, a connection unused for that long is PINGed before its next
    command, so a connection silently dropped by the network fails there rather than after
    the command was sent.
    """

    def __init__(
        self,
        address: Address,
        socket_timeout: float | None = 10.0,
        connect_timeout: float = 5.0,
        health_check_interval: float = 0.0,
    ) -> None:
        self.address = address
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.health_check_interval = health_check_interval
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._last_used = 0.0
        self.pid = forks.pid

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        if self._sock is not None:
            return
        address = self.address
        target = address.path or f"{address.host}:{address.port}"
        try:
            if address.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                sock.connect(address.path)
            else:
                sock = socket.create_connection((address.host, address.port), timeout=self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if address.tls:
                sock = _wrap_tls(sock, address)  # closes sock when the handshake fails
                sock.settimeout(self.socket_timeout)
            else:
                _set_kernel_timeout(sock, self.socket_timeout)
        except TimeoutError:
            raise RedisTimeoutError(f"timed out connecting to {target}") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to {target}: {exc}") from None
        self._sock = sock
        self._reader = hiredis.Reader(protocolError=_ProtocolError, replyError=RedisReplyError, encoding="utf-8")
        self._last_used = time.monotonic()
        setup = []
        if address.password is not None:
            setup.append(pack("AUTH", *((address.username,) if address.username else ()), address.password))
        if address.db:
            setup.append(pack("SELECT", address.db))
        if setup:
            try:
                self._send(b"".join(setup))
                for _ in setup:
                    self.read_response()
            except RedisReplyError as exc:  # a wrong password or database: no usable connection
                self.disconnect()
                raise RedisConnectionError(f"Redis at {target} refused the connection: {exc}") from None
            except BaseException:
                self.disconnect()
                raise

    def disconnect(self) -> None:
        sock, self._sock = self._sock, None
        self._reader = None
        if sock is not None and self.pid == forks.pid:
            try:
                # shutdown first: a thread blocked in select() on this socket (a result waiter
                # reading the final channel) wakes at once; close() alone may leave it blocked.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: the kernel's send timeout
            self.disconnect()
            raise RedisTimeoutError("timed out sending to Redis") from None
        except OSError as exc:
            self.disconnect()
            raise RedisConnectionError(f"connection to Redis lost while sending: {exc}") from None

    def send_packed_command(self, commands: list[bytes]) -> None:
        """Send already packed commands (their replies are read with :meth:`read_response`)."""
        if self._sock is None:
            self.connect()
        elif self.health_check_interval and time.monotonic() - self._last_used > self.health_check_interval:
            self._send(pack("PING"))
            self.read_response()
        self._send(commands[0] if len(commands) == 1 else b"".join(commands))

    def read_response(self) -> Any:
        """The next reply; an error reply is raised as :class:`RedisReplyError` (the connection stays usable)."""
        reader = self._reader
        if reader is None:
            raise RedisConnectionError("connection to Redis closed before the reply")
        reply = reader.gets()
        while reply is False:
            self._fill()
            reply = reader.gets()
        self._last_used = time.monotonic()
        if isinstance(reply, RedisReplyError):
            text = str(reply)
            raise NoScriptError(text) if is_not_loaded(text) else reply
        return reply

    def _fill(self) -> None:
        sock = self._sock
        if sock is None:
            raise RedisConnectionError("connection to Redis closed before the reply")
        try:
            data = sock.recv(_READ_SIZE)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: the kernel's receive timeout
            self.disconnect()
            raise RedisTimeoutError("timed out waiting for Redis to reply") from None
        except OSError as exc:
            self.disconnect()
            raise RedisConnectionError(f"connection to Redis lost: {exc}") from None
        if not data:
            self.disconnect()
            raise RedisConnectionError("connection closed by Redis")
        try:
            self._reader.feed(data)
        except AttributeError:  # disconnected by another path meanwhile
            raise RedisConnectionError("connection to Redis closed before the reply") from None

    def readable(self, timeout: float) -> bool:
        """Whether a reply is (or arrives within ``timeout`` s) ready to read."""
        if self._reader is not None and self._reader.has_data():
            return True
        if self._sock is None:
            raise RedisConnectionError("connection to Redis closed")
        if getattr(self._sock, "pending", lambda: 0)():  # TLS: bytes already decrypted
            return True
        ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        return bool(ready)

    def command(self, *args: Any) -> Any:
        self.send_packed_command([pack(*args)])
        return self.read_response()


def _wrap_tls(sock: socket.socket, address: Address) -> socket.socket:
    import ssl  # only for rediss:// (ssl costs memory in every process that imports it)

    options = address.tls_options
    try:
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
        if options.get("ssl_certfile"):
            context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    except (ssl.SSLError, OSError) as exc:  # e.g. a file that is not PEM: retrying cannot help
        sock.close()
        files = {name: options[name] for name in _TLS_FILE_OPTIONS if name in options}
        raise ConfigurationError(f"redis_url: cannot load the TLS files {files}: {exc}") from None
    reqs = options.get("ssl_cert_reqs", "required").lower()  # one of these three (parse_url)
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    check = options.get("ssl_check_hostname", "true" if reqs != "none" else "false").lower()
    context.check_hostname = check in ("1", "true", "yes")
    context.verify_mode = modes[reqs]
    try:
        return context.wrap_socket(sock, server_hostname=address.host)
    except ssl.SSLError as exc:
        sock.close()
        raise RedisConnectionError(f"TLS handshake with {address.host}:{address.port} failed: {exc}") from None


class Client:
    """Connections to one Redis server kept for reuse, and the commands pynenc sends.

    The reply shapes follow redis-py's for the same methods (the Redis Cluster path uses
    redis-py), so callers do not care which client they hold. Thread safe: each command
    takes a connection of its own from the idle list (list pop and append are atomic).
    """

    #: idle connections kept (more are closed when given back)
    keep = 16

    def __init__(
        self,
        url: str,
        socket_timeout: float | None = 10.0,
        connect_timeout: float = 5.0,
        health_check_interval: float = 15.0,
    ) -> None:
        self.address = parse_url(url)
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.health_check_interval = health_check_interval
        self.idle: list[Connection] = []

    def new_connection(self) -> Connection:
        return Connection(self.address, self.socket_timeout, self.connect_timeout, self.health_check_interval)

    def take(self) -> Connection:
        try:
            return self.idle.pop()
        except IndexError:
            return self.new_connection()

    def give(self, connection: Connection) -> None:
        if len(self.idle) < self.keep and connection.pid == forks.pid:
            self.idle.append(connection)
        else:
            connection.disconnect()

    def send(self, packed: bytes) -> Connection:
        """Send a packed command on a connection taken for it; returns that connection.

        Read the reply with :meth:`read`, which gives the connection back: a connection is
        only given back once its reply was read whole (or after it was closed), so a kept
        connection never holds unread data.
        """
        connection = self.take()
        try:
            connection.send_packed_command([packed])
        except BaseException:
            connection.disconnect()
            self.give(connection)
            raise
        return connection

    def read(self, connection: Connection) -> Any:
        """The reply to what :meth:`send` sent (an error reply raised); gives the connection back."""
        try:
            reply = connection.read_response()
        except RedisReplyError:
            self.give(connection)  # read whole: the connection is clean
            raise
        except BaseException:
            connection.disconnect()
            self.give(connection)
            raise
        self.give(connection)
        return reply

    def execute_command(self, *args: Any) -> Any:
        return self.read(self.send(pack(*args)))

    # --- the commands pynenc uses, shaped as redis-py returns them -------------------------

    def ping(self) -> bool:
        return bool(self.execute_command("PING") == "PONG")

    def blpop(self, keys: list[str], timeout: float = 0) -> tuple[str, str] | None:
        reply = self.execute_command("BLPOP", *keys, timeout)
        return (reply[0], reply[1]) if reply else None

    def hscan(self, key: str, cursor: int = 0, count: int | None = None) -> tuple[int, dict[str, str]]:
        args = ("COUNT", count) if count is not None else ()
        next_cursor, flat = self.execute_command("HSCAN", key, cursor, *args)
        return int(next_cursor), {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}

    def zpopmin(self, key: str) -> list[tuple[str, float]]:
        reply = self.execute_command("ZPOPMIN", key)
        return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]

    def zadd(self, key: str, mapping: dict[str, float], xx: bool = False, incr: bool = False) -> Any:
        flags = (*(("XX",) if xx else ()), *(("INCR",) if incr else ()))
        pairs = [part for member, score in mapping.items() for part in (repr(float(score)), member)]
        return self.execute_command("ZADD", key, *flags, *pairs)

    def zrem(self, key: str, *members: str) -> int:
        return int(self.execute_command("ZREM", key, *members))

    def zcard(self, key: str) -> int:
        return int(self.execute_command("ZCARD", key))

    def zrange(self, key: str, start: int, end: int, withscores: bool = False) -> list[Any]:
        if not withscores:
            return list(self.execute_command("ZRANGE", key, start, end))
        reply = self.execute_command("ZRANGE", key, start, end, "WITHSCORES")
        return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]

    def delete(self, *keys: str) -> int:
        return int(self.execute_command("DEL", *keys)) if keys else 0

    def config_get(self, pattern: str) -> dict[str, str]:
        reply = self.execute_command("CONFIG", "GET", pattern)
        return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}

    def script_load(self, source: str) -> str:
        return str(self.execute_command("SCRIPT", "LOAD", source))

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute_command("EVAL", source, numkeys, *keys_and_args)

    def pubsub(self) -> PubSub:
        # Its reads wait in select() (get_message's timeout); the socket timeout only bounds
        # reading the rest of a message that has begun to arrive.
        return PubSub(
            Connection(self.address, 10.0, self.connect_timeout, 0.0),
            health_check_interval=self.health_check_interval,
        )

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.disconnect()


class PubSub:
    """One subscribed connection; :meth:`get_message` returns redis-py's message dicts.

    With ``health_check_interval``, a subscription that received nothing for that long
    sends a PING; when the reply to it does not come within another interval, the
    connection is taken for dead (:class:`RedisConnectionError`), which is how a peer that
    vanished without closing the connection is noticed.
    """

    def __init__(self, connection: Connection, health_check_interval: float = 15.0) -> None:
        self.connection = connection
        self.health_check_interval = health_check_interval
        self._last_heard = time.monotonic()
        self._ping_sent_at: float | None = None

    def subscribe(self, *channels: str) -> None:
        self.connection.send_packed_command([pack("SUBSCRIBE", *channels)])
        self._last_heard = time.monotonic()

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next message (``type``, ``channel``, ``data``), or None after ``timeout`` seconds."""
        now = time.monotonic()
        if self.health_check_interval:
            if self._ping_sent_at is not None and now - self._ping_sent_at > self.health_check_interval:
                self.connection.disconnect()
                raise RedisConnectionError("subscription did not answer a PING: connection taken for dead")
            if self._ping_sent_at is None and now - self._last_heard > self.health_check_interval:
                self.connection.send_packed_command([pack("PING")])
                self._ping_sent_at = now
        if not self.connection.readable(timeout):
            return None
        reply = self.connection.read_response()
        self._last_heard = time.monotonic()
        self._ping_sent_at = None
        kind = reply[0]
        if kind == "pong":
            return {"type": "pong", "channel": None, "data": reply[1] if len(reply) > 1 else ""}
        return {"type": kind, "channel": reply[1], "data": reply[2]}

    def close(self) -> None:
        self.connection.disconnect()
