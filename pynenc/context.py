"""What is running in the current thread (or asyncio task).

A runner sets :data:`current_execution` around each invocation it executes, so
``task.invocation``, ``task.logger`` and waiting on results inside a task know
which invocation is asking.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol


class Waiter(Protocol):
    """What a runner offers to code waiting on results inside a task."""

    def wait_for(
        self, execution: Execution, invocation_ids: Sequence[str], timeout: float | None
    ) -> dict[str, str | None]:
        """Block until every id is final (pausing the execution where the runner can); the
        final ids in the order they became final, each with its stored SUCCESS result when
        known (else None), or ``{}`` when nothing was learned."""
        ...


@dataclass(frozen=True)
class Execution:
    runner: Waiter
    invocation_id: str
    task_id: str
    app: Any


current_execution: ContextVar[Execution | None] = ContextVar("pynenc_current_execution", default=None)
