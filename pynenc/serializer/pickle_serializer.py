"""PickleSerializer: dill for everything. Only use it with a backend you trust."""

from __future__ import annotations

from typing import Any

from pynenc.serializer.base import BaseSerializer, encode_dill


class PickleSerializer(BaseSerializer):
    def dumps(self, value: Any) -> str:
        return encode_dill(value)
