"""Declarative settings: the one place every setting is defined.

Each :class:`Setting` has a name, a type (its parser), a default, a group and a
description. Its environment variables are ``PYNENC__<NAME>`` and
``PYNENC__CONFIG<GROUP>__<NAME>`` (e.g. ``PYNENC__CONFIGREDIS__REDIS_URL``).
The configuration reference in docs/ and the CLI's options are generated from
these definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from pynenc.exceptions import ConfigurationError

T = TypeVar("T")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def parse_positive_float(value: Any) -> float:
    number = parse_float(value)
    if not number > 0:  # NaN too
        raise ValueError(f"expected a number above 0, got {value!r}")
    return number


def parse_non_negative_float(value: Any) -> float:
    number = parse_float(value)
    if not number >= 0:  # NaN too
        raise ValueError(f"expected a number of 0 or more, got {value!r}")
    return number


def parse_positive_int(value: Any) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError(f"expected an integer of 1 or more, got {value!r}")
    return number


def parse_non_negative_int(value: Any) -> int:
    number = parse_int(value)
    if number < 0:
        raise ValueError(f"expected an integer of 0 or more, got {value!r}")
    return number


def parse_port(value: Any) -> int:
    number = parse_int(value)
    if not 1 <= number <= 65535:
        raise ValueError(f"expected a TCP port (1-65535), got {value!r}")
    return number


def parse_str(value: Any) -> str:
    if not isinstance(value, str | int | float):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def parse_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    return parse_str(value)


def parse_log_level(value: Any) -> str:
    level = parse_str(value).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {value!r}")
    return level


def parse_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = parse_str(value).lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


@dataclass
class Setting(Generic[T]):
    """A typed setting, used as a class attribute of a config class (a descriptor)."""

    parse: Callable[[Any], T]
    default: T
    description: str
    group: str = "pynenc"
    type_name: str = ""
    name: str = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> T | Setting[T]:
        if obj is None:
            return self
        value: T = obj._values.get(self.name, self.default)  # type: ignore[attr-defined]
        return value

    def __set__(self, obj: object, value: Any) -> None:
        obj.set(self.name, value, source="code")  # type: ignore[attr-defined]

    def coerce(self, value: Any, source: str) -> T:
        try:
            return self.parse(value)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"setting {self.name!r} from {source}: {exc}. {self.description}") from exc

    @property
    def env_vars(self) -> list[str]:
        upper = self.name.upper()
        return [f"PYNENC__{upper}", f"PYNENC__CONFIG{self.group.upper()}__{upper}", f"PYNENC__CONFIGPYNENC__{upper}"]


def settings_of(cls: type) -> dict[str, Setting[Any]]:
    """All settings declared on a config class and its bases, in declaration order."""
    found: dict[str, Setting[Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Setting):
                found[name] = value
    return found
