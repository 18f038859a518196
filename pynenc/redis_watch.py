"""The Redis final-channel subscriber that wakes result waiters (one per process and channel)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pynenc import forks
from pynenc.final_waiters import FinalEvent, FinalWaiters

if TYPE_CHECKING:
    from pynenc.redis_client import RedisConnection

log = logging.getLogger("pynenc.redis")


class FinalWatcher(FinalWaiters):
    """One subscriber thread per process and channel that wakes result waiters.

    The scripts PUBLISH the id of every invocation that becomes final. A waiter
    registers the ids it wants (:meth:`watch`), clears its event, reads their
    statuses, then blocks on its event, which the thread sets when one of
    *its* ids is published: registering and clearing before reading means no
    event between the read and the wait is missed, and a final event wakes
    only the waiters of that id. While the subscription is down (Redis
    restarting) waiters fall back to short sleeps.

    The thread is subscribed only while someone waits, and for ``LINGER_SECONDS``
    after: a process that once waited (a web server, a runner after a fan-in) does
    not go on receiving every final event of the app. A new waiter subscribes again.
    """

    #: seconds the subscription is kept once nobody waits (back-to-back waits reuse it)
    LINGER_SECONDS = 0.5

    def __init__(self, connection: RedisConnection, channel: str) -> None:
        super().__init__()
        self.connection = connection
        self.channel = channel
        self.pid = forks.pid
        self.subscribed = threading.Event()
        self._stopping = threading.Event()
        self._wanted_since_idle = threading.Event()  # set by watch(): someone waits
        self._last_wanted = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"pynenc-final-{channel}", daemon=True)
        self._thread.start()

    def _on_watch_locked(self) -> None:
        self._last_wanted = time.monotonic()
        if not self._wanted_since_idle.is_set():
            self._wanted_since_idle.set()

    def unwatch(self, ids: Iterable[str], event: FinalEvent) -> set[str]:
        self._last_wanted = time.monotonic()
        return super().unwatch(ids, event)

    def wait(self, event: threading.Event, timeout: float) -> None:
        """Block until ``event`` is set (one of its ids went final), or ``timeout``."""
        if not self.subscribed.is_set():
            # No subscription yet (starting, or Redis away): wait for it briefly, then re-read.
            self.subscribed.wait(min(timeout, 0.05))
            return
        event.wait(timeout)

    def _idle_now(self) -> bool:
        """Nobody waits, nor did for LINGER_SECONDS: stop listening until someone does."""
        with self.lock:
            if self.anyone_waits_locked() or time.monotonic() - self._last_wanted < self.LINGER_SECONDS:
                return False
            self._wanted_since_idle.clear()  # under the lock: a watch() after this sets it again
            return True

    def _run(self) -> None:
        delay = 0.05
        while not self._stopping.is_set():
            if not self._wanted_since_idle.wait(1.0):
                continue
            client = None
            pubsub = None
            went_idle = False
            try:
                client = self.connection.pubsub_client()
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=self.LINGER_SECONDS)
                    if message is not None:
                        self._handle(message)
                        delay = 0.05
                    if self._idle_now():
                        went_idle = True
                        break
            except Exception as exc:  # connection lost: say so, back off, subscribe again
                if self._stopping.is_set():
                    break
                log.debug("final-channel subscriber: %s; resubscribing in %.2f s", exc, delay)
            finally:
                self.subscribed.clear()
                self.wake_all()
                for closable in (pubsub, client):
                    if closable is not None:
                        try:
                            closable.close()
                        except Exception:
                            pass
            if not went_idle:
                self._stopping.wait(delay)
                delay = min(delay * 2, 1.0)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # Waiters re-read: events before the subscription were not seen. Woken before
            # `subscribed` is set, so whoever sees it set knows that wake-up is behind it.
            self.wake_all()
            self.subscribed.set()
        elif kind == "message":
            invocation_id, tab, result = (message.get("data") or "").partition("\t")
            if tab:
                self.publish_result(invocation_id, result)
            else:
                self.publish([invocation_id])

    def stop(self) -> None:
        """Ask the thread to end (within a second; it is a daemon, so nobody waits for it)."""
        self._stopping.set()
