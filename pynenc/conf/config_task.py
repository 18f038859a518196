"""Per-task options: decorator arguments, also settable per task by configuration.

Precedence for one task, highest first: decorator arguments, the environment
(``PYNENC__CONFIGTASK__<MODULE>#<TASK>__<OPTION>``), the ``task`` section of a
config file or ``[tool.pynenc.task."module.task"]``, defaults.
"""

from __future__ import annotations

import enum
import importlib
from typing import Any

from pynenc.conf.settings import Setting, parse_bool, parse_non_negative_int, parse_positive_int
from pynenc.exceptions import ConfigurationError, RetryError, UnknownTaskOptionError


class ConcurrencyControlType(str, enum.Enum):
    """How concurrency control matches invocations of one task."""

    DISABLED = "DISABLED"  #: no control
    TASK = "TASK"  #: any invocation of the task matches
    ARGUMENTS = "ARGUMENTS"  #: invocations with the same arguments match
    KEYS = "KEYS"  #: invocations with the same ``key_arguments`` match


def parse_concurrency(value: Any) -> ConcurrencyControlType:
    if isinstance(value, ConcurrencyControlType):
        return value
    text = str(value).strip().upper().rpartition(".")[2]
    try:
        return ConcurrencyControlType[text]
    except KeyError:
        valid = ", ".join(item.name for item in ConcurrencyControlType)
        raise ValueError(f"expected one of {valid}, got {value!r}") from None


def parse_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(item) for item in value)


def _import_exception(path: str) -> type[BaseException]:
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name or "builtins"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import exception {path!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(f"{path!r} is not an exception class")
    return found


def parse_exceptions(value: Any) -> tuple[type[BaseException], ...]:
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    items = value.split(",") if isinstance(value, str) else list(value)
    result = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            result.append(item)
        elif isinstance(item, str) and item.strip():
            result.append(_import_exception(item.strip()))
        else:
            raise ValueError(f"expected exception classes or their dotted names, got {item!r}")
    return tuple(result)


class ConfigTask:
    """Options of one task (``task.conf``)."""

    running_concurrency = Setting(
        parse_concurrency, ConcurrencyControlType.DISABLED, "At most one matching invocation runs at a time.", "task"
    )
    registration_concurrency = Setting(
        parse_concurrency,
        ConcurrencyControlType.DISABLED,
        "A call matching a not-yet-started invocation returns that invocation.",
        "task",
    )
    key_arguments: Setting[tuple[str, ...]] = Setting(
        parse_names, (), "Argument names compared by KEYS concurrency control.", "task"
    )
    on_diff_non_key_args_raise = Setting(
        parse_bool, False, "KEYS registration match with different other arguments raises.", "task"
    )
    reroute_on_concurrency_control = Setting(
        parse_bool, True, "A blocked invocation waits to run (True) or ends CONCURRENCY_CONTROLLED_FINAL.", "task"
    )
    retry_for: Setting[tuple[type[BaseException], ...]] = Setting(
        parse_exceptions, (RetryError,), "Exception types that re-queue the invocation.", "task"
    )
    max_retries = Setting(
        parse_non_negative_int, 0, "Retries before an exception in retry_for ends the invocation FAILED.", "task"
    )
    parallel_batch_size = Setting(
        parse_positive_int, 100, "Invocations registered per backend call by parallelize.", "task"
    )

    def __init__(self, task_id: str, options: dict[str, Any], config_options: dict[str, Any] | None = None) -> None:
        from pynenc.conf import sources

        self.task_id = task_id
        self._values: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        specs = self.settings()
        for name in options:
            if name not in specs:
                raise UnknownTaskOptionError(
                    f"task {task_id!r}: unknown option {name!r}; valid options: {', '.join(specs)}"
                )
        for name, value in (config_options or {}).items():
            if name in specs:
                self.set(name, value, "config file")
        for name, (raw, variable) in sources.environ_task_options(task_id).items():
            if name not in specs:
                raise UnknownTaskOptionError(f"{variable}: task {task_id!r} has no option {name!r}")
            self.set(name, raw, f"env {variable}")
        for name, value in options.items():
            self.set(name, value, "decorator")
        if self.running_concurrency is ConcurrencyControlType.KEYS or (
            self.registration_concurrency is ConcurrencyControlType.KEYS
        ):
            if not self.key_arguments:
                raise ConfigurationError(f"task {task_id!r}: KEYS concurrency control needs key_arguments")

    @classmethod
    def settings(cls) -> dict[str, Setting[Any]]:
        from pynenc.conf.settings import settings_of

        return settings_of(cls)

    def set(self, name: str, value: Any, source: str = "code") -> None:
        spec = self.settings().get(name)
        if spec is None:
            raise UnknownTaskOptionError(f"task {self.task_id!r}: unknown option {name!r}")
        self._values[name] = spec.coerce(value, f"{source} for task {self.task_id}")
        self._sources[name] = source

    def source_of(self, name: str) -> str:
        return self._sources.get(name, "default")
