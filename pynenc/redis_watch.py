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
    """One subscription per process and channel, whose messages wake result waiters.

    The scripts PUBLISH the id of every invocation that becomes final. A waiter
    registers the ids it wants (:meth:`watch`), clears its event, reads their
    statuses, then blocks (:meth:`wait`) until its event is set, when one of *its* ids
    is published: registering and clearing before reading means no event between the
    read and the wait is missed, and a final event wakes only the waiters of that id.
    While the subscription is down (Redis restarting) waiters fall back to short sleeps.

    Who reads the subscription: a waiter that finds nobody reading reads it itself (the
    reader role is :attr:`_read_lock`), handing every message to whoever it is for, until
    its own event is set; a round trip then costs no hand-over from another thread. The
    others wait on their events while one reads. The thread of this class subscribes,
    re-subscribes after a lost connection, reads while waiters wait without a reader (the
    reader left with its own result) and while nobody waits (the linger below).

    The subscription is kept only while someone waits, and for ``LINGER_SECONDS``
    after: a process that once waited (a web server, a runner after a fan-in) does
    not go on receiving every final event of the app. A new waiter subscribes again.
    """

    #: seconds the subscription is kept once nobody waits (back-to-back waits reuse it)
    LINGER_SECONDS = 0.5
    #: invocations remembered as registered by this process while subscribed (oldest dropped)
    FRESH_CAP = 4096
    #: nobody waited for this long: the thread reads (drains the subscription, sees to the linger)
    QUIET_SECONDS = 0.05
    #: longest single read of the thread, so it leaves the reader role soon when waiters come
    READ_SLICE = 0.05

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
        #: id -> epoch: invocations this process registered while subscribed whose final event
        #: has not come since (see note_fresh; an id leaves when its event comes)
        self._fresh: dict[str, int] = {}
        #: held by whoever reads the subscription now (a waiter, or the thread)
        self._read_lock = threading.Lock()
        #: the subscription being read, once it is confirmed (None: none, or lost)
        self._pubsub: Any = None
        #: waiters blocked on their events while someone else reads, oldest first (under self.lock)
        self._followers: list[FinalEvent] = []
        #: wakes the thread: the subscription was lost, or the watcher stops
        self._thread_wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pynenc-final-{channel}", daemon=True)
        self._thread.start()

    def _on_watch_locked(self) -> None:
        self._last_wanted = time.monotonic()
        if not self._wanted_since_idle.is_set():
            self._wanted_since_idle.set()

    def note_fresh(self, ids: Iterable[str]) -> None:
        """``ids`` are about to be registered by this process, each new (no registration key).

        Called before the registration is sent. While the subscription that is up now stays
        up, every final event of these ids is read here (by a waiter or the thread), which
        drops the id; so a wait on one still listed knows, without reading Redis, that it is
        not final yet (:meth:`known_pending`): the first read of a wait is saved.
        """
        with self.lock:
            if not self.subscribed.is_set():
                return
            fresh, epoch = self._fresh, self._epoch
            for invocation_id in ids:
                fresh[invocation_id] = epoch
            while len(fresh) > self.FRESH_CAP:
                del fresh[next(iter(fresh))]

    def known_pending(self, ids: Iterable[str]) -> bool:
        """Whether every id is known not final yet: registered by this process under the
        subscription still up (:meth:`note_fresh`), with no final event since."""
        with self.lock:
            if not self.subscribed.is_set():
                return False
            epoch = self._epoch
            return all(self._fresh.get(invocation_id) == epoch for invocation_id in ids)

    def publish_locked(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for invocation_id in ids:
            self._fresh.pop(invocation_id, None)
        super().publish_locked(ids)

    def unwatch(self, ids: Iterable[str], event: FinalEvent) -> set[str]:
        self._last_wanted = time.monotonic()
        return super().unwatch(ids, event)

    def wait(self, event: threading.Event, timeout: float) -> None:
        """Block until ``event`` is set (one of its ids went final), or ``timeout``.

        Reads the subscription itself when nobody does (see the class); else waits for
        whoever reads to set ``event``, or to hand it the reader role when leaving.
        """
        if not self.subscribed.is_set():
            # No subscription yet (starting, or Redis away): wait for it briefly, then re-read.
            self.subscribed.wait(min(timeout, 0.05))
            return
        assert isinstance(event, FinalEvent)
        deadline = time.monotonic() + timeout
        while not event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._read_lock.acquire(blocking=False):
                try:
                    self._read_until(event, deadline)
                finally:
                    self._release_reader()
                return
            if not self._follow(event, remaining):
                return

    def _follow(self, event: FinalEvent, timeout: float) -> bool:
        """Wait while someone else reads; True when woken only to take over the reading."""
        with self.lock:
            self._followers.append(event)
            woken_all = event.woken_all
        try:
            event.wait(timeout)
        finally:
            with self.lock:
                self._followers.remove(event)
                promoted, event.promoted = event.promoted, False
                take_over = promoted and not event.published and event.woken_all == woken_all
                if take_over:
                    event.clear()  # under the lock: a publication after this sets it again
                elif promoted:
                    self._promote_locked()  # it leaves with its own answer: the next one reads
        return take_over

    def _release_reader(self) -> None:
        """Leave the reader role; if others wait without a reader, wake one to take it."""
        self._read_lock.release()
        with self.lock:
            self._promote_locked()

    def _promote_locked(self) -> None:
        if self._followers:
            follower = self._followers[0]
            follower.promoted = True
            follower.set()

    def _read_until(self, event: threading.Event, deadline: float) -> None:
        """As the reader: handle messages until ``event`` is set or ``deadline`` passes."""
        pubsub = self._pubsub
        if pubsub is None:  # lost just now: the thread subscribes again
            event.wait(min(deadline - time.monotonic(), 0.05))
            return
        while not event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                message = pubsub.get_message(timeout=remaining)
            except Exception as exc:  # connection lost: the thread subscribes again
                self._lost(pubsub, exc)
                return
            if message is not None:
                self._handle(message)

    def _lost(self, pubsub: Any, exc: BaseException) -> None:
        """The subscription ``pubsub`` failed under a reader: every waiter re-reads, the thread
        subscribes again."""
        with self.lock:
            if self._pubsub is not pubsub:
                return  # already known
            self._pubsub = None
            self.subscribed.clear()
        log.debug("final-channel subscription lost: %s", exc)
        self.wake_all()
        self._thread_wake.set()

    def _thread_should_read(self) -> bool:
        """No wait began or ended for QUIET_SECONDS.

        While waits come and go (a client waiting on call after call) the waiters read, each
        in turn; the thread steps in after a quiet spell: nobody waits (it drains the
        subscription and sees to the linger), or whoever waits blocks on its event without
        :meth:`wait` (read for it all the same).
        """
        with self.lock:
            return time.monotonic() - self._last_wanted >= self.QUIET_SECONDS

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
                self._read_lock.acquire()  # nobody reads before the subscription is confirmed
                try:
                    pubsub.subscribe(self.channel)
                    self._pubsub = pubsub
                    while not self.subscribed.is_set() and not self._stopping.is_set():
                        message = pubsub.get_message(timeout=self.READ_SLICE)
                        if message is not None:
                            self._handle(message)
                finally:
                    self._release_reader()
                delay = 0.05
                went_idle = self._serve(pubsub)
            except Exception as exc:  # connection lost: say so, back off, subscribe again
                if self._stopping.is_set():
                    break
                log.debug("final-channel subscriber: %s; resubscribing in %.2f s", exc, delay)
            finally:
                with self.lock:
                    self._pubsub = None
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

    def _serve(self, pubsub: Any) -> bool:
        """Read when waiters are left without a reader or nobody waits, until nobody waited for
        LINGER_SECONDS (True: unsubscribe) or the subscription is lost (raises, or False)."""
        while not self._stopping.is_set():
            if self._pubsub is not pubsub:
                return False  # a reader lost it
            if not self._thread_should_read():
                self._thread_wake.wait(self.QUIET_SECONDS)
                self._thread_wake.clear()
                continue
            if not self._read_lock.acquire(timeout=self.READ_SLICE):
                continue  # a waiter reads
            try:
                message = pubsub.get_message(timeout=self.READ_SLICE)
                if message is not None:
                    self._handle(message)
            finally:
                self._release_reader()
            if self._idle_now():
                return True
        return False

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
        self._thread_wake.set()
