"""The serializer contract: values to text and back.

``dumps(value) -> str`` and ``loads(text) -> value``. Every payload starts with a
one-character format tag (``j`` JSON, ``d`` dill) so a reader can decode what any
serializer wrote, whatever serializer it is configured with, with one exception:
a serializer whose ``unpickles`` is False (JsonSerializer) refuses dill payloads, because
loading one runs whatever code its writer chose. ``dumps`` raises
:class:`SerializationError` for a value it cannot represent.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from typing import Any

import orjson

from pynenc.exceptions import PickleRefusedError, SerializationError

JSON_TAG = "j"
DILL_TAG = "d"
_JSON_OPTIONS = orjson.OPT_SORT_KEYS


class BaseSerializer(ABC):
    #: whether :meth:`loads` (and the errors and displays of an app using it) may load dill
    #: payloads; False means a payload written into the backend can never run code here
    unpickles = True

    @abstractmethod
    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any:
        return decode(text, allow_pickle=self.unpickles)

    # What an app stores and shows follows its serializer's ``unpickles``, in one place:
    def dumps_error(self, exc: BaseException) -> str:
        """``exc`` as a stored error payload (pynenc.serializer.errors.encode_exception)."""
        from pynenc.serializer.errors import encode_exception  # errors builds on this module

        return encode_exception(exc, allow_pickle=self.unpickles)

    def loads_error(self, payload: str) -> BaseException:
        """A stored error payload rebuilt (pynenc.serializer.errors.decode_exception)."""
        from pynenc.serializer.errors import decode_exception

        return decode_exception(payload, allow_pickle=self.unpickles)

    def render(self, text: str, limit: int = 80) -> str:
        return render(text, limit, allow_pickle=self.unpickles)

    def render_arguments(self, arguments: dict[str, str], limit: int = 80) -> str:
        return render_arguments(arguments, limit, allow_pickle=self.unpickles)


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


def decode(text: str, allow_pickle: bool = True) -> Any:
    """The value of a tagged payload; a dill payload only when ``allow_pickle``."""
    if not text:
        raise SerializationError("empty payload")
    tag, body = text[0], text[1:]
    if tag == DILL_TAG and not allow_pickle:
        raise PickleRefusedError(
            f"payload is pickled (dill, {len(text)} characters) and this app's serializer never unpickles: "
            "loading it could run code; it was written by an app using AutoSerializer or PickleSerializer"
        )
    try:
        if tag == JSON_TAG:
            return orjson.loads(body)
        if tag == DILL_TAG:
            import dill

            return dill.loads(base64.b64decode(body.encode(), validate=True))
    except Exception as exc:
        raise SerializationError(f"corrupted payload ({tag!r} format): {exc}") from exc
    raise SerializationError(f"payload has unknown format tag {tag!r}")


def render(text: str, limit: int = 80, allow_pickle: bool = True) -> str:
    """Short human-readable form of a payload (for logs, errors and the CLI)."""
    try:
        shown = repr(decode(text, allow_pickle))
    except PickleRefusedError:
        shown = f"<pickled, {len(text)} characters, not loaded>"
    except SerializationError:
        shown = "<undecodable>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def render_arguments(arguments: dict[str, str], limit: int = 80, allow_pickle: bool = True) -> str:
    return ", ".join(f"{name}={render(payload, limit, allow_pickle)}" for name, payload in arguments.items())
