"""Backends the behavioural suite runs on: name -> function configuring an app for it.

Each function gets the app and the pytest request (to reach fixtures such as a
Redis server or tmp_path) and only sets the backend settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynenc import Pynenc


def memory(app: Pynenc, request: Any) -> None:
    app.conf.orchestrator_cls = "MemOrchestrator"
    app.conf.broker_cls = "MemBroker"
    app.conf.state_backend_cls = "MemStateBackend"


BACKENDS: dict[str, Callable[[Pynenc, Any], None]] = {
    "mem": memory,
}
