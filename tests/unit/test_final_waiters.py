"""Who is woken when invocations become final (shared by the Redis and SQLite watchers)."""

from __future__ import annotations

from pynenc.final_waiters import FinalWaiters


def test_a_final_event_wakes_only_the_waiters_of_that_id() -> None:
    waiters = FinalWaiters()
    first, second = waiters.watch(["a"]), waiters.watch(["b"])
    waiters.publish(["a"])
    assert first.is_set() and not second.is_set()
    assert waiters.take_published(first) == {"a"} and not first.is_set()


def test_a_group_wait_is_woken_once_every_id_it_still_misses_was_published() -> None:
    # A paused task waiting for its whole group has nothing to do before then: one wake-up
    # instead of one per child.
    waiters = FinalWaiters()
    event = waiters.watch(["a", "b", "c"])
    waiters.expect(event, 3)
    waiters.publish(["b"])
    waiters.publish_result("a", "j1")
    assert not event.is_set()
    waiters.publish(["c"])
    assert event.is_set()
    assert waiters.take_published(event) == {"a", "b", "c"}
    assert event.arrivals == ["b", "a", "c"]  # the order they were published: the order they finished
    assert event.results == {"a": "j1"}


def test_expecting_fewer_than_already_published_wakes_at_once_and_wake_all_ignores_the_count() -> None:
    waiters = FinalWaiters()
    event = waiters.watch(["a", "b"])
    waiters.expect(event, 2)
    waiters.publish(["a"])
    assert not event.is_set()
    waiters.expect(event, 1)  # the waiter learned meanwhile that only one is left
    assert event.is_set()
    waiters.take_published(event)
    waiters.expect(event, 5)
    waiters.wake_all()  # a reconnected subscriber: events may have been missed, everyone looks
    assert event.is_set()
