"""Component classes by name, for the ``*_cls`` settings.

A setting holds either a short name from this table or ``module:ClassName``
for a class of your own. Names are checked when set; the class is imported
when the app first uses the component.
"""

from __future__ import annotations

import importlib
from typing import Any

from pynenc.exceptions import InvalidComponentError

KNOWN: dict[str, dict[str, str]] = {
    "orchestrator": {
        "MemOrchestrator": "pynenc.orchestrator.mem_orchestrator",
        "RedisOrchestrator": "pynenc.orchestrator.redis_orchestrator",
        "SQLiteOrchestrator": "pynenc.orchestrator.sqlite_orchestrator",
    },
    "broker": {
        "MemBroker": "pynenc.broker.mem_broker",
        "RedisBroker": "pynenc.broker.redis_broker",
        "SQLiteBroker": "pynenc.broker.sqlite_broker",
    },
    "state_backend": {
        "MemStateBackend": "pynenc.state_backend.mem_state_backend",
        "RedisStateBackend": "pynenc.state_backend.redis_state_backend",
        "SQLiteStateBackend": "pynenc.state_backend.sqlite_state_backend",
    },
    "runner": {
        "DummyRunner": "pynenc.runners.dummy_runner",
        "ThreadRunner": "pynenc.runners.thread_runner",
        "ProcessRunner": "pynenc.runners.process_runner",
        "PersistentProcessRunner": "pynenc.runners.process_runner",
        "MultiThreadRunner": "pynenc.runners.process_runner",
    },
    "serializer": {
        "AutoSerializer": "pynenc.serializer.auto_serializer",
        "JsonSerializer": "pynenc.serializer.json_serializer",
        "PickleSerializer": "pynenc.serializer.pickle_serializer",
    },
}


def check_component_name(kind: str, name: str) -> str:
    if name in KNOWN[kind] or (":" in name and all(name.split(":", 1))):
        return name
    valid = ", ".join(sorted(KNOWN[kind]))
    raise InvalidComponentError(
        f"{kind}_cls={name!r} is not a known {kind.replace('_', ' ')}; valid names: {valid} "
        f"(or 'module:ClassName' for your own class)"
    )


def load_component(kind: str, name: str) -> type[Any]:
    check_component_name(kind, name)
    if name in KNOWN[kind]:
        module_name, class_name = KNOWN[kind][name], name
    else:
        module_name, class_name = name.split(":", 1)
    try:
        module = importlib.import_module(module_name)
        cls: type[Any] = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidComponentError(f"{kind}_cls={name!r} cannot be loaded: {exc}") from exc
    return cls
