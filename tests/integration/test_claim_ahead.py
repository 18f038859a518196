"""Claiming ahead on Redis: finish, start what was held ahead and claim the next, in one script.

What a runner holds ahead is PENDING (owned, leased, not started); it is started by the
runner's next finish, given back with ``release``, or requeued without a stall when its
lease expires. The pool runner's use of it is tested with a real supervisor at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.models import CallSpec, Outcome, OutcomeKind
from pynenc.status import InvocationStatus as S
from tests.integration import test_supervisor_tasks as t
from tests.integration.test_redis_backend import configure, orchestrator_of, spec
from tests.integration.test_supervisor_tasks import backend_fixture, daemon_fixture, env_fixture  # noqa: F401

OK = Outcome(OutcomeKind.SUCCESS, "jnull")


@pytest.fixture(name="rapp")
def rapp_fixture(redis_url: str) -> Iterator[Pynenc]:
    """An app on Redis (a fresh app id), purged afterwards."""
    app = configure(Pynenc(), redis_url)
    yield app
    app.purge()
    app.reset_components()


def statuses_in_history(app: Pynenc, invocation_id: str) -> list[S]:
    record = app.orchestrator.get_record(invocation_id)
    assert record is not None
    return [entry.status for entry in record.history]


def running_one_holding_one(orchestrator: Any) -> tuple[CallSpec, CallSpec]:
    """Runner r1 finished a first invocation, claiming a second to run and a third ahead."""
    first, second, third = spec(), spec(), spec()
    orchestrator.register([first, second, third])
    orchestrator.claim("r1", 1, 30)
    reply = orchestrator.finish_start_claim("r1", first.invocation_id, OK, None, 2, 1, 30)()
    assert [c.invocation_id for c in reply.claimed] == [second.invocation_id, third.invocation_id]
    return second, third


def test_a_claim_ahead_is_pending_until_the_next_finish_starts_it(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    first, second, third = spec(), spec(), spec()
    orchestrator.register([first, second, third])
    [claimed] = orchestrator.claim("r1", 1, 30)
    assert claimed.invocation_id == first.invocation_id

    # finish nothing held: claim one to run now and one ahead
    reply = orchestrator.finish_start_claim("r1", first.invocation_id, OK, None, 2, 1, 30)()
    assert reply.done and not reply.started
    assert [c.invocation_id for c in reply.claimed] == [second.invocation_id, third.invocation_id]
    assert orchestrator.get_status(second.invocation_id) is S.RUNNING
    assert orchestrator.get_status(third.invocation_id) is S.PENDING
    assert orchestrator.executing_count() == 2  # PENDING counts as executing: it is taken

    # finish second, start third (held ahead), nothing left to claim; the reply is read later
    read = orchestrator.finish_start_claim("r1", second.invocation_id, OK, third.invocation_id, 1, 0, 30)
    reply = read()  # (until read, another connection may or may not see it applied)
    assert reply.done and reply.started and reply.claimed == []
    assert statuses_in_history(rapp, third.invocation_id) == [S.REGISTERED, S.PENDING, S.RUNNING]
    assert orchestrator.finish("r1", third.invocation_id, OK)
    assert orchestrator.status_counts() == {S.SUCCESS: 3}


def test_a_claim_ahead_whose_stored_call_is_corrupted_ends_failed_at_once(rapp: Pynenc) -> None:
    # Claimed ahead (PENDING) and unreadable: it must end FAILED now, not come back by
    # lease expiry again and again.
    orchestrator = orchestrator_of(rapp)
    first, second, broken = spec(), spec(), spec()
    orchestrator.register([first, second, broken])
    orchestrator.conn.command("HSET", orchestrator.keys.spec, broken.invocation_id, "{not json")
    orchestrator.claim("r1", 1, 30)
    reply = orchestrator.finish_start_claim("r1", first.invocation_id, OK, None, 2, 1, 30)()
    assert [c.invocation_id for c in reply.claimed] == [second.invocation_id]
    record = orchestrator.get_record(broken.invocation_id)
    assert record is not None and record.status is S.FAILED
    assert "stored call is corrupted" in (record.error or "")
    assert statuses_in_history(rapp, broken.invocation_id) == [S.REGISTERED, S.PENDING, S.RUNNING, S.FAILED]
    assert orchestrator.recover_expired(3) == []


def test_a_runner_cannot_end_what_it_holds_ahead_as_success(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    _, third = running_one_holding_one(orchestrator)
    assert not orchestrator.finish("r1", third.invocation_id, OK)  # it never ran
    assert orchestrator.get_status(third.invocation_id) is S.PENDING


def test_a_claim_ahead_given_back_is_not_started_by_a_late_finish(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    second, third = running_one_holding_one(orchestrator)

    orchestrator.release("r1", [third.invocation_id])  # given back: queued again, at the front
    assert orchestrator.get_status(third.invocation_id) is S.REROUTED
    [again] = orchestrator.claim("r2", 1, 30)
    assert again.invocation_id == third.invocation_id

    reply = orchestrator.finish_start_claim("r1", second.invocation_id, OK, third.invocation_id, 0, 0, 30)()
    assert reply.done and not reply.started  # r1 gave it back: its late start changes nothing
    record = orchestrator.get_record(third.invocation_id)
    assert record is not None
    assert record.status is S.RUNNING
    assert [(h.status, h.runner_id) for h in record.history][-3:] == [
        (S.REROUTED, "r1"),
        (S.PENDING, "r2"),
        (S.RUNNING, "r2"),
    ]


def test_an_expired_claim_ahead_is_requeued_without_counting_a_stall(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    first, second = spec(), spec()
    orchestrator.register([first, second])
    orchestrator.claim("r1", 1, 30)
    # r1 claims `second` ahead with a lease that is already over, then dies
    reply = orchestrator.finish_start_claim("r1", first.invocation_id, OK, None, 1, 0, -1)()
    assert [c.invocation_id for c in reply.claimed] == [second.invocation_id]
    assert orchestrator.recover_expired(max_stalls=0) == [second.invocation_id]
    record = orchestrator.get_record(second.invocation_id)
    assert record is not None
    assert record.status is S.REROUTED  # not FAILED, although max_stalls is 0: it never ran
    assert record.stalls == 0
    assert [h.status for h in record.history][-2:] == [S.PENDING_RECOVERY, S.REROUTED]


@pytest.mark.parametrize("backend", ["redis"])  # the backend that claims ahead
def test_a_held_ahead_invocation_does_not_wait_behind_a_long_task(daemon: t.DaemonFactory, tmp_path: Path) -> None:
    # One runner, short tasks, then a long one and a short one queued behind it. The short
    # one may be claimed ahead when the long one starts; it must go back to the queue
    # promptly (where another runner could take it), not stay PENDING for the long one.
    supervisor = daemon("--processes", "1")
    supervisor.ready()
    shorts = list(t.add.parallelize([(i, i) for i in range(5)]))
    marker = tmp_path / "long-started"
    long = t.slow(str(marker), 3.0)
    behind = t.add(100, 1)
    t.wait_until(marker.exists, 30, "the long task to start")
    t.wait_until(
        lambda: status_in_pool_app(behind.invocation_id) in (S.REGISTERED, S.REROUTED),
        1.5,
        "the invocation behind the long task to be queued, not held",
    )
    assert long.get_result(30) > 0
    assert behind.get_result(30) == 101
    assert [s.get_result(30) for s in shorts] == [2 * i for i in range(5)]


def status_in_pool_app(invocation_id: str) -> Any:
    return t.app.orchestrator.get_status(invocation_id)


def test_a_claim_ahead_is_leased_for_max_pending_seconds(rapp: Pynenc) -> None:
    # A runner that dies holding an invocation it never started gives it up this soon.
    rapp.conf.max_pending_seconds = 0.3
    orchestrator = orchestrator_of(rapp)
    second, third = running_one_holding_one(orchestrator)
    recovered: list[str] = []

    def expired() -> list[str]:
        recovered.extend(orchestrator.recover_expired(3))
        return recovered

    t.wait_until(expired, 10, "the PENDING lease to expire")
    assert recovered == [third.invocation_id]  # the RUNNING one keeps its 30 s lease
    assert orchestrator.get_status(second.invocation_id) is S.RUNNING
    assert orchestrator.get_status(third.invocation_id) is S.REROUTED
