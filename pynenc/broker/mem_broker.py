"""MemBroker: the queue in process memory (a heap with lazy removal).

Not thread-safe on its own: the MemOrchestrator calls it under its lock.
"""

from __future__ import annotations

import heapq
import itertools

from pynenc.broker.base import BaseBroker


class MemBroker(BaseBroker):
    family = "mem"

    def __init__(self, app: object) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self._heap: list[tuple[int, int, str]] = []
        #: id -> (priority, sequence) of its live heap entry
        self._entries: dict[str, tuple[int, int]] = {}
        self._counter = itertools.count(1)
        self._front_counter = itertools.count(-1, -1)

    def enqueue(self, invocation_id: str, priority: int = 0, front: bool = False) -> None:
        sequence = next(self._front_counter) if front else next(self._counter)
        self._push(invocation_id, priority, sequence)

    def _push(self, invocation_id: str, priority: int, sequence: int) -> None:
        self._entries[invocation_id] = (priority, sequence)
        heapq.heappush(self._heap, (-priority, sequence, invocation_id))

    def pop(self) -> str | None:
        while self._heap:
            negative_priority, sequence, invocation_id = heapq.heappop(self._heap)
            if self._entries.get(invocation_id) == (-negative_priority, sequence):
                del self._entries[invocation_id]
                return invocation_id
        return None

    def add_priority(self, invocation_id: str, delta: int) -> None:
        entry = self._entries.get(invocation_id)
        if entry is not None:
            self._push(invocation_id, entry[0] + delta, entry[1])

    def remove(self, invocation_id: str) -> None:
        self._entries.pop(invocation_id, None)

    def depth(self) -> int:
        return len(self._entries)

    def peek(self, limit: int = 10) -> list[tuple[str, int]]:
        ordered = sorted(self._entries.items(), key=lambda item: (-item[1][0], item[1][1]))
        return [(invocation_id, entry[0]) for invocation_id, entry in ordered[:limit]]

    def purge(self) -> None:
        self._heap.clear()
        self._entries.clear()
