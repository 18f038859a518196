"""The serializer contract: values to text and back.

``dumps(value) -> str`` and ``loads(text) -> value``. Every payload starts with a
one-character format tag (``j`` JSON, ``d`` dill) so a reader can always decode
what any serializer wrote, whatever serializer it is configured with.
``dumps`` raises :class:`SerializationError` for a value it cannot represent.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from typing import Any

import orjson

from pynenc.exceptions import SerializationError

JSON_TAG = "j"
DILL_TAG = "d"
_JSON_OPTIONS = orjson.OPT_SORT_KEYS


class BaseSerializer(ABC):
    @abstractmethod
    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any:
        return decode(text)


def encode_json(value: Any) -> str:
    """Tagged JSON; raises TypeError for values orjson cannot encode."""
    return JSON_TAG + orjson.dumps(value, option=_JSON_OPTIONS).decode()


def encode_dill(value: Any) -> str:
    import dill

    try:
        raw = dill.dumps(value)
    except Exception as exc:  # dill raises many types for unpicklable values
        raise SerializationError(f"cannot pickle {type(value).__name__} value: {exc}") from exc
    return DILL_TAG + base64.b64encode(raw).decode()


def decode(text: str) -> Any:
    if not text:
        raise SerializationError("empty payload")
    tag, body = text[0], text[1:]
    try:
        if tag == JSON_TAG:
            return orjson.loads(body)
        if tag == DILL_TAG:
            import dill

            return dill.loads(base64.b64decode(body.encode(), validate=True))
    except Exception as exc:
        raise SerializationError(f"corrupted payload ({tag!r} format): {exc}") from exc
    raise SerializationError(f"payload has unknown format tag {tag!r}")


def render(text: str, limit: int = 80) -> str:
    """Short human-readable form of a payload (for logs, errors and the CLI)."""
    try:
        shown = repr(decode(text))
    except SerializationError:
        shown = "<undecodable>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def render_arguments(arguments: dict[str, str], limit: int = 80) -> str:
    return ", ".join(f"{name}={render(payload, limit)}" for name, payload in arguments.items())
