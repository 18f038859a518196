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
    #: invocations remembered as registered by this process while subscribed (oldest dropped)
    FRESH_CAP = 4096

    def __init__(self, connection: RedisConnection, channel: str) -> None:
        super().__init__()
        self.connection = connection
        self.channel = channel
        self.pid = forks.pid
        self.subscribed = threading.Event()
        self._stopping = threading.Event()
        self._wanted_since_idle = threading.Event()  # set by watch(): someone waits
        self._last_wanted = time.monotonic()
        #: one more for every confirmed subscription: what was learned under an earlier one
        #: (a fresh entry's epoch) says nothing about what the current one missed
        self._epoch = 0
        #: id -> (epoch, final): invocations this process registered while subscribed, and
        #: whether their final event has come since (see note_fresh)
        self._fresh: dict[str, tuple[int, bool]] = {}
        self._thread = threading.Thread(target=self._run, name=f"pynenc-final-{channel}", daemon=True)
        self._thread.start()

    def _on_watch_locked(self) -> None:
        self._last_wanted = time.monotonic()
        if not self._wanted_since_idle.is_set():
            self._wanted_since_idle.set()

    def note_fresh(self, ids: Iterable[str]) -> None:
        """``ids`` are about to be registered by this process, each new (no registration key).

        Called before the registration is sent. While the subscription that is up now stays
        up, every final event of these ids reaches this thread, which marks them; so a wait
        on one of them that finds it unmarked knows, without reading Redis, that it is not
        final yet (:meth:`known_pending`): the first read of a wait is saved.
        """
        with self.lock:
            if not self.subscribed.is_set():
                return
            fresh, epoch = self._fresh, self._epoch
            for invocation_id in ids:
                fresh[invocation_id] = (epoch, False)
            while len(fresh) > self.FRESH_CAP:
                del fresh[next(iter(fresh))]

    def known_pending(self, ids: Iterable[str]) -> bool:
        """Whether every id is known not final yet: registered by this process under the
        subscription still up (:meth:`note_fresh`), with no final event since."""
        with self.lock:
            if not self.subscribed.is_set():
                return False
            epoch = self._epoch
            return all(self._fresh.get(invocation_id) == (epoch, False) for invocation_id in ids)

    def publish_locked(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for invocation_id in ids:
            if invocation_id in self._fresh:
                self._fresh[invocation_id] = (self._epoch, True)
        super().publish_locked(ids)

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
            with self.lock:
                self._epoch += 1
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
