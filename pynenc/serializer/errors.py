"""Exceptions as stored payloads, rebuilt with their original type and message."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

import orjson

from pynenc.exceptions import RemoteTaskError, SerializationError
from pynenc.serializer.base import decode, encode_dill, encode_json


def encode_exception(exc: BaseException, allow_pickle: bool = True) -> str:
    """The exception as a stored payload; arguments JSON cannot carry are pickled when
    ``allow_pickle`` (else only the message is kept: a reader that never unpickles could
    not load them)."""
    cls = type(exc)
    try:
        args = encode_json(list(exc.args))
    except TypeError:
        args = encode_json([str(exc)])
        if allow_pickle:
            try:
                args = encode_dill(exc.args)
            except SerializationError:
                pass  # the message alone, then
    data = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "args": args,
        "traceback": "".join(traceback.format_exception(exc)),
    }
    if hasattr(exc, "chain"):
        data["chain"] = exc.chain
    return orjson.dumps(data).decode()


def describe_exception(payload: str) -> dict[str, Any]:
    """The stored fields (type, message, traceback) without rebuilding the exception."""
    try:
        data: dict[str, Any] = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"corrupted error payload: {exc}") from exc
    return data


def decode_exception(payload: str, allow_pickle: bool = True) -> BaseException:
    """The stored exception rebuilt with its type; a RemoteTaskError when that fails, or when
    its arguments are pickled and ``allow_pickle`` is False."""
    data = describe_exception(payload)
    type_name = str(data.get("type", "Exception"))
    message = str(data.get("message", ""))
    module_name, _, qualname = type_name.rpartition(".")
    try:
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        args = decode(data["args"], allow_pickle)
        if "chain" in data:
            exc: BaseException = cls(message, [tuple(step) for step in data["chain"]])
        else:
            exc = cls(*args)
    except Exception:
        return RemoteTaskError(type_name, message, str(data.get("traceback", "")))
    exc.__notes__ = [f"remote traceback:\n{data.get('traceback', '')}"]
    return exc
