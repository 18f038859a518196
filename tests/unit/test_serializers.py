"""Serializers: tagged payloads, round trips, and the errors for values they cannot carry."""

from __future__ import annotations

import dataclasses

import pytest

from pynenc.exceptions import CycleDetectedError, SerializationError
from pynenc.serializer.auto_serializer import AutoSerializer
from pynenc.serializer.base import decode, render
from pynenc.serializer.errors import decode_exception, encode_exception
from pynenc.serializer.json_serializer import JsonSerializer
from pynenc.serializer.pickle_serializer import PickleSerializer


@dataclasses.dataclass
class Point:
    x: int
    y: int


class CustomError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code


@pytest.mark.parametrize("value", [1, "s", None, True, 1.5, [1, "a"], {"k": [1, 2]}])
def test_auto_uses_json_for_plain_values(value: object) -> None:
    text = AutoSerializer().dumps(value)
    assert text.startswith("j")
    assert decode(text) == value


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, Point(1, 2), {"t": (1,)}, b"raw", float("nan")])
def test_auto_falls_back_to_dill_when_json_would_change_the_value(value: object) -> None:
    text = AutoSerializer().dumps(value)
    assert text.startswith("d")
    decoded = decode(text)
    if isinstance(value, float):
        assert decoded != decoded
    else:
        assert decoded == value and type(decoded) is type(value)


def test_json_serializer_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(SerializationError, match="not JSON serializable"):
        JsonSerializer().dumps(CustomError(1, "x"))
    with pytest.raises(SerializationError, match="does not survive JSON"):
        JsonSerializer().dumps((1, 2))


def test_unpicklable_value_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot pickle"):
        PickleSerializer().dumps(i for i in range(3))


def test_any_serializer_reads_any_tagged_payload() -> None:
    assert JsonSerializer().loads(PickleSerializer().dumps((1, 2))) == (1, 2)


@pytest.mark.parametrize("payload", ["", "x123", "j{not json", "dnot-base64!"])
def test_corrupted_payloads_raise_serialization_error(payload: str) -> None:
    with pytest.raises(SerializationError):
        decode(payload)
    assert render(payload) == "<undecodable>"


def test_exceptions_round_trip_with_type_message_and_attributes() -> None:
    try:
        raise CustomError(7, "bad thing")
    except CustomError as exc:
        payload = encode_exception(exc)
    rebuilt = decode_exception(payload)
    assert type(rebuilt) is CustomError
    assert rebuilt.args == (7, "bad thing")
    assert "bad thing" in str(rebuilt)


def test_cycle_error_keeps_its_chain() -> None:
    error = CycleDetectedError("a -> b -> a", chain=[("t.a", "x=1", "id1"), ("t.b", "y=2", "id2")])
    rebuilt = decode_exception(encode_exception(error))
    assert isinstance(rebuilt, CycleDetectedError)
    assert "a -> b -> a" in str(rebuilt)
