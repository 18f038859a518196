"""What is running in the current thread (or asyncio task).

A runner sets :data:`current_execution` around each invocation it executes, so
``task.invocation``, ``task.logger`` and waiting on results inside a task know
which invocation is asking.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynenc.runners.base import BaseRunner


@dataclass(frozen=True)
class Execution:
    runner: BaseRunner
    invocation_id: str
    task_id: str
    app: Any


current_execution: ContextVar[Execution | None] = ContextVar("pynenc_current_execution", default=None)
