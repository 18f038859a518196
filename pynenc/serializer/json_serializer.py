"""JsonSerializer: orjson only; values JSON cannot represent exactly are refused, and
pickled payloads are never loaded (nothing read from the backend can run code)."""

from __future__ import annotations

from typing import Any

import orjson

from pynenc.exceptions import SerializationError
from pynenc.serializer.base import BaseSerializer, encode_json


class JsonSerializer(BaseSerializer):
    unpickles = False

    def dumps(self, value: Any) -> str:
        try:
            text = encode_json(value)
        except TypeError as exc:
            raise SerializationError(f"{type(value).__name__} value is not JSON serializable: {exc}") from exc
        if orjson.loads(text[1:]) != value:
            raise SerializationError(
                f"{type(value).__name__} value does not survive JSON (tuples, sets and custom types do not); "
                "use AutoSerializer or PickleSerializer"
            )
        return text
