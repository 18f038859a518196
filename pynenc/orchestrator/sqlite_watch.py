"""One thread per process and app that tells SQLite result waiters which of their ids went final.

Every finished invocation gets the next number of the app's ``final`` counter
(column ``final_seq``). The watcher remembers the last number it has seen;
when this process's Signal moves (a local commit, or the doorbell of another
process) or the file changed elsewhere (polled with backoff where no doorbell
rings), it reads the rows numbered after it, one query whatever the number of
waiters, and sets the events of the waiters of those ids only.

Without it every waiting thread re-read its own ids on every commit anywhere:
with hundreds of paused invocations (a deep recursive fan-out) that is
hundreds of queries and thread wake-ups per finished invocation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pynenc import forks
from pynenc.final_waiters import FinalEvent, FinalWaiters
from pynenc.sqlite_store import SQLiteStore

log = logging.getLogger(__name__)


class FinalWatcher(FinalWaiters):
    """Publishes ids that became final to the events that watch them.

    ``read_since(seq)`` returns the ids numbered after ``seq`` and the highest
    number read; ``read_counter()`` the app's current number. A waiter calls
    :meth:`watch` *before* reading statuses itself, so an id that goes final
    after that read has a number above the watcher's and is published to it.
    """

    def __init__(
        self,
        store: SQLiteStore,
        read_since: Callable[[int], tuple[list[str], int]],
        read_counter: Callable[[], int],
    ) -> None:
        super().__init__()
        self.store = store
        self.read_since = read_since
        self.read_counter = read_counter
        self.pid = forks.pid
        self.seq = 0
        self.someone_waits = threading.Condition(self.lock)
        self._thread = threading.Thread(target=self._run, name="pynenc-sqlite-final", daemon=True)
        self._thread.start()

    def _on_watch_locked(self) -> None:
        if not self.anyone_waits_locked():
            # Idle, the thread did not follow the counter: start from now (the waiter reads
            # statuses after this, so nothing numbered up to here is missed).
            self.seq = self.read_counter()
        self.someone_waits.notify_all()

    def unwatch_at(self, ids: list[str], event: FinalEvent) -> tuple[set[str], int]:
        """:meth:`unwatch`, with the number seen so far (a waiter coming back for the same
        ids reads only rows numbered after it)."""
        with self.lock:
            seq = self.seq
        return self.unwatch(ids, event), seq

    def _run(self) -> None:
        while True:
            with self.lock:
                self.someone_waits.wait_for(self.anyone_waits_locked)
            try:
                # Returns when nobody waits any more (checked at each change) or after a second.
                self.store.wait_until(self._publish_new, 1.0, "final")
            except Exception as exc:  # the file unreadable for a moment: waiters time out and re-read
                log.warning("SQLite final watcher: %s; retrying in a second", exc)
                time.sleep(1.0)

    def _publish_new(self) -> bool:
        with self.lock:
            since = self.seq
        ids, seq = self.read_since(since)
        with self.lock:
            if self.seq == since:  # else watch() restarted from a later number meanwhile
                self.seq = seq
            self.publish_locked(ids)
            return not self.anyone_waits_locked()
