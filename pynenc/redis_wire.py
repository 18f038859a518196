"""The Redis wire format pynenc writes itself, and the connections its script calls use.

Script calls and hot reads are packed here once per call (RESP bulk strings, as redis-py
would encode them) and sent on :class:`ScriptConnections`, without the per-command
bookkeeping of redis-py's pool; replies are parsed by the connection's (hiredis) parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError


def bulk(value: Any) -> bytes:
    """One argument as a RESP bulk string, encoded as redis-py encodes it (floats by repr)."""
    kind = type(value)  # exact types first: this runs for every argument of every call
    if kind is str:
        data = value.encode()
    elif kind is bytes:
        data = value
    elif kind is int or kind is float:
        data = repr(value).encode()
    elif isinstance(value, bytes | str):
        data = value if isinstance(value, bytes) else value.encode()
    elif isinstance(value, bool):
        raise TypeError("a bool is not a Redis argument")  # as redis-py refuses it
    elif isinstance(value, int | float):
        data = repr(value).encode()
    else:
        raise TypeError(f"{type(value).__name__} is not a Redis argument")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack_prefix(sha: str, keys: Sequence[str | bytes]) -> bytes:
    """EVALSHA, sha, number of keys and the keys, as RESP bulk strings (the array header apart)."""
    return b"".join([bulk(b"EVALSHA"), bulk(sha), bulk(len(keys)), *(bulk(key) for key in keys)])


def packed_evalsha(prefix: bytes, n_keys: int, args: Sequence[Any]) -> bytes:
    return b"*%d\r\n%s%s" % (3 + n_keys + len(args), prefix, b"".join([bulk(arg) for arg in args]))


def packed_command(args: Sequence[Any]) -> bytes:
    """A whole command (name and arguments) as one RESP array."""
    return b"*%d\r\n%s" % (len(args), b"".join([bulk(arg) for arg in args]))


class ScriptConnections:
    """Connections kept for script calls, taken and given back without the pool's bookkeeping.

    redis-py's pool checks the process id, polls the socket for unread data and records
    metrics on every checkout: a large part of a transition's client time. A script
    connection is only given back after its reply was read whole (or it is disconnected
    first), so it never holds unread data; connections are made with the pool's settings
    (timeouts, credentials, TLS, health checks), reconnect by themselves when dropped, and
    a new process makes new ones (the client is rebuilt after fork).
    """

    #: idle connections kept (more are closed when given back)
    keep = 16

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.idle: list[Any] = []

    def take(self) -> Any:
        try:
            return self.idle.pop()  # atomic: threads never get the same one
        except IndexError:
            return self.pool.connection_class(**self.pool.connection_kwargs)

    def give(self, connection: Any) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(connection)
        else:
            connection.disconnect()

    def drop(self, connection: Any) -> None:
        """A connection whose state is unknown (error mid-command): closed, then kept."""
        connection.disconnect()
        self.give(connection)

    def send(self, command: bytes) -> Any:
        """Send a packed command on a connection taken for it; returns that connection."""
        connection = self.take()
        try:
            connection.send_packed_command([command])
        except BaseException:
            self.drop(connection)
            raise
        return connection

    def read(self, connection: Any) -> Any:
        """The reply to what :meth:`send` sent, raised as redis-py raises it; gives the connection back."""
        try:
            response = connection.read_response()
        except ResponseError:
            self.give(connection)  # an error reply was read whole: the connection is clean
            raise
        except BaseException:
            self.drop(connection)
            raise
        self.give(connection)
        return response
