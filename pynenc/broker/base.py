"""The broker contract: the queue of runnable invocations.

A priority queue of invocation ids: higher priority first, FIFO within a
priority (by enqueue order). Priority is the number of invocations waiting on
the queued one, so the work most others wait for runs first. The orchestrator
drives these operations inside its atomic transitions (on Redis and SQLite it
touches the same storage from its scripts/transactions); applications never
call them directly, inspection does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pynenc.app import Pynenc


class BaseBroker(ABC):
    family: ClassVar[str] = ""

    def __init__(self, app: Pynenc) -> None:
        self.app = app

    @abstractmethod
    def enqueue(self, invocation_id: str, priority: int = 0, front: bool = False) -> None:
        """Add (or move) an id; ``front`` puts it ahead of its priority's FIFO order."""

    @abstractmethod
    def pop(self) -> str | None:
        """Remove and return the highest-priority oldest id, or None when empty."""

    @abstractmethod
    def add_priority(self, invocation_id: str, delta: int) -> None:
        """Raise a queued id's priority (no-op when it is not queued)."""

    @abstractmethod
    def remove(self, invocation_id: str) -> None: ...

    @abstractmethod
    def depth(self) -> int: ...

    @abstractmethod
    def peek(self, limit: int = 10) -> list[tuple[str, int]]:
        """The next ids in claim order with their priorities (for inspection)."""

    @abstractmethod
    def purge(self) -> None: ...

    def close(self) -> None:
        """Release connections."""
