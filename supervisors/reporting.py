"""What a supervisor tells the world about its pool: the snapshot ``pynenc status`` shows
(published to the backend every :data:`PUBLISH_SECONDS` with a 3x expiry), systemd's
STATUS= line and its watchdog pings."""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from pynenc.supervisors.slot_table import SlotState

if TYPE_CHECKING:
    from pynenc.supervisors.arbiter import Arbiter

PUBLISH_SECONDS = 2.0


class Reporter:
    """The supervisor's status, read from its slot table and its runner processes."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self._last_status = ""
        self._next_publish = 0.0
        self._next_watchdog = 0.0

    def status_text(self) -> str:
        """One line for systemd's STATUS= and the logs."""
        arbiter = self.arbiter
        slots = [arbiter.table.read(w.slot) for w in arbiter.workers.values()]
        counts = collections.Counter(SlotState.IDLE if s.idle else s.state for s in slots)
        return (
            f"{counts[SlotState.RUNNING]} running, {counts[SlotState.PAUSED] + counts[SlotState.RESUMING]} paused, "
            f"{counts[SlotState.IDLE]} idle; {len(arbiter.workers)} runner processes (target {arbiter.processes})"
        )

    def snapshot(self) -> dict[str, Any]:
        """What ``pynenc status`` shows for this supervisor (the published schema)."""
        arbiter = self.arbiter
        slots = [s for s in arbiter.table.read_all() if s.state is not SlotState.EMPTY]
        return {
            "host": arbiter.host,
            "pid": arbiter.pid,
            "started_at": arbiter.started_at,
            "processes": arbiter.processes,
            "max_paused": arbiter.max_paused,
            "app": arbiter.app_name,
            "slots": [
                {
                    "index": s.index,
                    "pid": s.pid,
                    # an idle runner holding its permit while it waits shows idle, as it is
                    "state": "idle" if s.idle else s.state.name.lower(),
                    "invocation_id": s.invocation_id or None,
                    "task_id": s.task_id or None,
                    "started_at": s.started_at or None,
                    "heartbeat": s.heartbeat,
                    "done": s.invocations_done,
                    "rss": s.rss_bytes,
                }
                for s in slots
            ],
        }

    def publish_soon(self) -> None:
        """Publish at the next :meth:`publish` (e.g. once the pool is ready)."""
        self._next_publish = 0.0

    def publish(self) -> None:
        """Every PUBLISH_SECONDS: the snapshot to the backend and STATUS= to systemd; the
        watchdog ping as often as systemd asks."""
        arbiter = self.arbiter
        notifier = arbiter.notifier
        mono = time.monotonic()
        interval = notifier.watchdog_interval()
        if interval is not None and mono >= self._next_watchdog:
            notifier.watchdog()
            self._next_watchdog = mono + interval
        if mono < self._next_publish:
            return
        self._next_publish = mono + PUBLISH_SECONDS
        status = self.status_text()
        if status != self._last_status:
            self._last_status = status
            notifier.status(status)
        try:
            arbiter.app.state_backend.publish_info(
                "supervisor", f"{arbiter.host}:{arbiter.pid}", self.snapshot(), PUBLISH_SECONDS * 3
            )
        except Exception as exc:
            arbiter.log.warning("could not publish supervisor status", error=repr(exc))
