"""Serializers: tagged payloads, round trips, and the errors for values they cannot carry."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from pynenc import Pynenc
from pynenc.cli import snapshot
from pynenc.exceptions import CycleDetectedError, RemoteTaskError, SerializationError
from pynenc.models import CallSpec
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


def test_serializers_read_each_others_payloads_except_json_reading_pickles() -> None:
    assert AutoSerializer().loads(PickleSerializer().dumps((1, 2))) == (1, 2)
    assert PickleSerializer().loads(JsonSerializer().dumps([1, 2])) == [1, 2]
    assert JsonSerializer().loads(AutoSerializer().dumps({"k": 1})) == {"k": 1}
    with pytest.raises(SerializationError):
        JsonSerializer().loads(AutoSerializer().dumps((1, 2)))  # a tuple goes to dill


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


# ----- a serializer that never unpickles ----------------------------------------------------
#: what unpickling a Trap ran (nothing, wherever unpickling is refused)
TRAPPED: list[str] = []


def _spring() -> str:
    TRAPPED.append("code ran")
    return "trapped"


class Trap:
    """Unpickling it calls _spring: a stand-in for a payload written to run code."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_spring, ())


@pytest.fixture
def trap() -> str:
    TRAPPED.clear()
    return PickleSerializer().dumps(Trap())


def test_the_trap_would_run_code_where_unpickling_is_allowed(trap: str) -> None:
    assert AutoSerializer().loads(trap) == "trapped" and TRAPPED == ["code ran"]


def test_json_serializer_refuses_a_pickled_payload_without_loading_it(trap: str) -> None:
    with pytest.raises(SerializationError, match="never unpickles"):
        JsonSerializer().loads(trap)
    assert TRAPPED == []


def test_with_unpickling_refused_an_error_with_pickled_arguments_is_a_remote_task_error(trap: str) -> None:
    stored = json.loads(encode_exception(CustomError(3, "bad")))
    payload = json.dumps({**stored, "args": trap})
    error = decode_exception(payload, allow_pickle=False)
    assert isinstance(error, RemoteTaskError) and "bad" in str(error)
    assert TRAPPED == []


def test_the_cli_of_a_json_app_shows_a_pickled_argument_without_loading_it(trap: str) -> None:
    json_app = Pynenc(app_id="json-only", config_values={"serializer_cls": "JsonSerializer"})
    call = CallSpec("inv-trap", "tests.unit.test_serializers.task", {"x": trap}, call_key="inv-trap")
    json_app.orchestrator.register([call])
    shown = snapshot.invocation(json_app, "inv-trap", time.time())
    assert shown["arguments"]["x"] == f"<pickled, {len(trap)} characters, not loaded>"
    assert render(trap, allow_pickle=False) == shown["arguments"]["x"]
    assert TRAPPED == []


def test_an_app_that_never_unpickles_stores_only_the_message_of_an_error_json_cannot_carry() -> None:
    error = CustomError(7, "bad")
    error.args = ({1, 2},)  # a set: not JSON
    stored = json.loads(encode_exception(error, allow_pickle=False))
    assert stored["args"] == JsonSerializer().dumps([str(error)])
    assert json.loads(encode_exception(error))["args"].startswith("d")  # pickled where allowed
