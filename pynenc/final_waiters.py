"""Who waits for which invocations to become final: shared by the backends' watcher threads.

A waiter registers the ids it wants (:meth:`FinalWaiters.watch`) *before* it reads their
statuses, then blocks on the event it got. A backend's watcher thread calls
:meth:`FinalWaiters.publish` with ids that became final (a Redis pub/sub message, a SQLite
``final_seq`` read), which sets the events of those ids' waiters only. A publication only
says "look": the waiter reads the statuses again, which decide.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class FinalEvent(threading.Event):
    """A waiter's event, with the ids published for it since the waiter last took them."""

    def __init__(self) -> None:
        super().__init__()
        self.published: set[str] = set()
        #: SUCCESS results that came with their final events (id -> stored result)
        self.results: dict[str, str] = {}
        #: every id published for this event since it was made, in the order published
        self.arrivals: list[str] = []
        #: set only once this many ids are published and not taken (a wait for a whole group
        #: has nothing to do before every id it still misses was published)
        self.need = 1
        #: times wake_all set this event (a wake-up that asks for a new look, with no id)
        self.woken_all = 0
        #: set by a watcher that wakes this waiter to take over reading (no id published)
        self.promoted = False


class FinalWaiters:
    """Ids waited on -> the events of their waiters (every method takes :attr:`lock`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wanted: dict[str, set[FinalEvent]] = {}

    def watch(self, ids: Iterable[str]) -> FinalEvent:
        event = FinalEvent()
        with self.lock:
            self._on_watch_locked()
            for invocation_id in ids:
                self._wanted.setdefault(invocation_id, set()).add(event)
        return event

    def _on_watch_locked(self) -> None:
        """Called under the lock by every :meth:`watch`, before the ids are added (a subclass
        can tell whether anybody waited before, or note that somebody waits now)."""

    def take_published(self, event: FinalEvent) -> set[str]:
        """The ids published for ``event`` since the last call, and ``event`` cleared.

        Both happen under the lock that publications take, so a publication that comes
        later sets the event again and is taken by the next call.
        """
        with self.lock:
            published, event.published = event.published, set()
            event.clear()
            return published

    def expect(self, event: FinalEvent, count: int) -> None:
        """Wake ``event`` only once ``count`` ids are published for it and not taken (at least 1);
        at once if they already are. :meth:`wake_all` still wakes it regardless."""
        with self.lock:
            event.need = max(count, 1)
            if len(event.published) >= event.need:
                event.set()

    def unwatch(self, ids: Iterable[str], event: FinalEvent) -> set[str]:
        """Stop watching; returns what was published for ``event`` and not taken."""
        with self.lock:
            for invocation_id in ids:
                events = self._wanted.get(invocation_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._wanted[invocation_id]
            return event.published

    def publish(self, ids: Iterable[str]) -> None:
        with self.lock:
            self.publish_locked(ids)

    def publish_result(self, invocation_id: str, result: str) -> None:
        """``invocation_id`` ended SUCCESS with ``result`` (a final event that carried it)."""
        with self.lock:
            for event in self._wanted.get(invocation_id, ()):
                event.results[invocation_id] = result
            self.publish_locked([invocation_id])

    def publish_locked(self, ids: Iterable[str]) -> None:
        for invocation_id in ids:
            for event in self._wanted.get(invocation_id, ()):
                event.published.add(invocation_id)
                event.arrivals.append(invocation_id)
                if len(event.published) >= event.need:
                    event.set()

    def wake_all(self) -> None:
        """Wake every waiter without publishing anything (they read their statuses again)."""
        with self.lock:
            for events in self._wanted.values():
                for event in events:
                    event.woken_all += 1
                    event.set()

    def waits_for(self, invocation_id: str) -> bool:
        """Whether someone watches ``invocation_id`` now."""
        with self.lock:
            return invocation_id in self._wanted

    def anyone_waits_locked(self) -> bool:
        return bool(self._wanted)
