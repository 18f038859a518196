"""The Redis wire format (RESP) pynenc writes itself.

Script calls and hot reads are packed here once per call (RESP bulk strings, floats by
repr), then sent on the kept connections of a :class:`pynenc.redis_conn.Client`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def sent_again(args: list[Any]) -> list[Any]:
    """The arguments of a script call sent again after its reply was lost: its call id
    (ARGV[1], see the scripts' prelude) marked with "-", so the script knows that the first
    call may have run (the claims then hand over what it claimed instead of claiming more)."""
    first = str(args[0])
    return args if first.startswith("-") else ["-" + first, *args[1:]]


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


def pack_prefix(command: bytes, script: str, keys: Sequence[str | bytes]) -> bytes:
    """FCALL and a function name (or EVALSHA and a sha), the number of keys and the keys, as
    RESP bulk strings (the array header apart): both commands take the same shape."""
    return b"".join([bulk(command), bulk(script), bulk(len(keys)), *(bulk(key) for key in keys)])


def packed_script_call(prefix: bytes, n_keys: int, args: Sequence[Any]) -> bytes:
    """A whole FCALL/EVALSHA command: ``prefix`` (from :func:`pack_prefix`) and the arguments."""
    parts = []
    for arg in args:  # str and bytes inline (most arguments): a call of bulk() each cost more
        kind = type(arg)
        if kind is str:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        elif kind is bytes:
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        else:
            parts.append(bulk(arg))
    return b"*%d\r\n%s%s" % (3 + n_keys + len(args), prefix, b"".join(parts))


def packed_command(args: Sequence[Any]) -> bytes:
    """A whole command (name and arguments) as one RESP array."""
    return b"*%d\r\n%s" % (len(args), b"".join([bulk(arg) for arg in args]))
