"""Serializers: AutoSerializer (default), JsonSerializer, PickleSerializer."""

from pynenc.serializer.base import BaseSerializer

__all__ = ["BaseSerializer"]
