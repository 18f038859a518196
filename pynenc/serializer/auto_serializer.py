"""AutoSerializer (default): JSON when the value round-trips exactly, dill otherwise."""

from __future__ import annotations

from typing import Any

import orjson

from pynenc.serializer.base import BaseSerializer, encode_dill, encode_json

_PLAIN = (str, int, float, bool, type(None))


class AutoSerializer(BaseSerializer):
    def dumps(self, value: Any) -> str:
        if type(value) in _PLAIN and value == value:  # NaN fails the second test
            return encode_json(value)
        try:
            text = encode_json(value)
        except TypeError:
            return encode_dill(value)
        # orjson turns tuples into lists and dataclasses into dicts: check it round-trips.
        if orjson.loads(text[1:]) == value and _same_shape(orjson.loads(text[1:]), value):
            return text
        return encode_dill(value)


def _same_shape(decoded: Any, original: Any) -> bool:
    if type(decoded) is not type(original):
        return False
    if isinstance(original, dict):
        return all(_same_shape(decoded[k], v) for k, v in original.items())
    if isinstance(original, list):
        return all(_same_shape(a, b) for a, b in zip(decoded, original, strict=True))
    return True
