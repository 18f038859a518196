"""A script call whose reply is lost with its connection is sent again, and takes nothing twice.

The call may have run before the connection went (Redis restarted after the write, a proxy
cut it, the client's socket timed out). Sent again, it is marked so (its call id with "-"):
what the first call claimed or started for the runner is handed over again, instead of a
further invocation being claimed while the first ones sit owned by nobody who knows it until
their leases expire. Each test lets the call run on the real server, then closes the connection
it was sent on before its reply is read (as a timeout or a reset would), so reading the
reply fails and the connection sends the call again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from pynenc import Pynenc
from pynenc.models import Outcome, OutcomeKind
from pynenc.status import InvocationStatus as S
from tests.integration.test_claim_ahead import rapp_fixture  # noqa: F401 (rapp: an app on Redis)
from tests.integration.test_redis_backend import history_of, orchestrator_of, poll, spec

OK = Outcome(OutcomeKind.SUCCESS, "jnull")


def queued(orchestrator: Any) -> int:
    return int(orchestrator.conn.command("ZCARD", orchestrator.keys.queue))


def sent_then_cut(orchestrator: Any, monkeypatch: pytest.MonkeyPatch, send: Callable[[], Any], left: int) -> Any:
    """``send()`` a script call; once it has run (the queue is down to ``left``), close the
    connection it went on, its reply unread. Returns what ``send`` returned (the reply reader)."""
    connections = orchestrator.conn._connections()
    used: list[Any] = []
    real_send = connections.send

    def noting(packed: bytes) -> Any:
        connection = real_send(packed)
        used.append(connection)
        return connection

    monkeypatch.setattr(connections, "send", noting)
    read = send()
    [connection] = used
    monkeypatch.setattr(connections, "send", real_send)
    poll(lambda: queued(orchestrator) == left)
    connection.disconnect()  # the reply, written by Redis, is never read
    return read


def owned_by(orchestrator: Any, runner: str) -> set[str]:
    """The invocations ``runner`` owns (the state hash: field id -> "<status>\\t<owner>\\t...")."""
    flat = orchestrator.conn.command("HGETALL", orchestrator.keys.state)  # [id, state, id, state, ...]
    return {
        invocation_id
        for invocation_id, state in zip(flat[0::2], flat[1::2], strict=True)
        if state.split("\t")[1] == runner
    }


def test_a_finish_sent_again_hands_over_what_the_lost_call_started_and_claimed(
    rapp: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator = orchestrator_of(rapp)
    first, second, third, fourth, fifth = (spec() for _ in range(5))
    orchestrator.register([first, second, third, fourth, fifth])
    orchestrator.claim("r1", 1, 30)
    orchestrator.finish_start_claim("r1", first.invocation_id, OK, None, 2, 1, 30)()  # second runs, third held

    # finish second, start third (held ahead), claim fourth ahead: the reply is lost
    read = sent_then_cut(
        orchestrator,
        monkeypatch,
        lambda: orchestrator.finish_start_claim("r1", second.invocation_id, OK, third.invocation_id, 1, 0, 30),
        left=1,
    )
    reply = read()

    assert reply.done and reply.started
    assert [c.invocation_id for c in reply.claimed] == [fourth.invocation_id]
    assert queued(orchestrator) == 1  # fifth was not claimed by the call sent again
    assert orchestrator.get_status(fifth.invocation_id) is S.REGISTERED
    assert owned_by(orchestrator, "r1") == {third.invocation_id, fourth.invocation_id}
    # each transition once: the call sent again wrote nothing the first one had written
    assert history_of(orchestrator, third.invocation_id) == [(S.REGISTERED, None), (S.PENDING, "r1"), (S.RUNNING, "r1")]
    assert history_of(orchestrator, fourth.invocation_id) == [(S.REGISTERED, None), (S.PENDING, "r1")]
    assert [s for s, _ in history_of(orchestrator, second.invocation_id)].count(S.SUCCESS) == 1

    # and the runner goes on with them as usual
    after = orchestrator.finish_start_claim("r1", third.invocation_id, OK, fourth.invocation_id, 1, 1, 30)()
    assert after.done and after.started and [c.invocation_id for c in after.claimed] == [fifth.invocation_id]


def test_a_claim_sent_again_returns_the_invocation_the_lost_call_claimed(
    rapp: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator = orchestrator_of(rapp)
    first, second = spec(), spec()
    orchestrator.register([first, second])
    read = sent_then_cut(orchestrator, monkeypatch, lambda: orchestrator.state.send("claim", "r1", 1, 30), left=1)
    flat = read()

    assert [c.invocation_id for c in orchestrator._claimed("r1", flat, 0)] == [first.invocation_id]
    assert queued(orchestrator) == 1 and owned_by(orchestrator, "r1") == {first.invocation_id}
    assert history_of(orchestrator, first.invocation_id) == [(S.REGISTERED, None), (S.PENDING, "r1"), (S.RUNNING, "r1")]


def test_a_wait_sent_again_returns_the_awaited_invocation_the_lost_call_claimed(
    rapp: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The waiter was PAUSED by the lost call, which also claimed an awaited child for its
    # runner to run at once; sent again, the call finds the waiter PAUSED and hands the child over.
    orchestrator = orchestrator_of(rapp)
    parent = spec()
    orchestrator.register([parent])
    orchestrator.claim("r1", 1, 30)
    children = [spec(parent_invocation_id=parent.invocation_id) for _ in range(3)]
    orchestrator.register(children)
    ids = [c.invocation_id for c in children]
    waiter = parent.invocation_id
    read = sent_then_cut(
        orchestrator, monkeypatch, lambda: orchestrator.state.send("wait", "r1", waiter, "1", 30, *ids), left=2
    )
    flat = read()

    assert int(flat[0]) == 1
    [claimed] = orchestrator._claimed("r1", flat, 2)
    assert claimed.invocation_id in ids
    assert orchestrator.get_status(parent.invocation_id) is S.PAUSED
    assert queued(orchestrator) == 2 and owned_by(orchestrator, "r1") == {parent.invocation_id, claimed.invocation_id}
    assert orchestrator.get_status(claimed.invocation_id) is S.RUNNING


def test_a_call_sent_again_claims_as_usual_when_the_lost_one_never_ran(rapp: Pynenc) -> None:
    # The mark only adds what the lost call took; if it took nothing, the call claims anew.
    orchestrator = orchestrator_of(rapp)
    first = spec()
    orchestrator.register([first])
    flat = orchestrator.state.conn.run("claim", orchestrator.state._keys_of("claim"), ["-999999", b"ch", "r1", 1, 30])
    assert [c.invocation_id for c in orchestrator._claimed("r1", flat, 0)] == [first.invocation_id]
    assert queued(orchestrator) == 0


def test_a_claim_retried_after_its_reply_was_lost_returns_what_it_claimed(
    rapp: Pynenc, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    # The synchronous path (claim waits for its reply): the retry after a connection error
    # is marked as sent again from its second attempt on.
    orchestrator = orchestrator_of(rapp)
    first, second = spec(), spec()
    orchestrator.register([first, second])
    connections = orchestrator.conn._connections()
    real_read = connections.read
    watcher = redis.Redis.from_url(redis_url)
    queue = orchestrator.keys.queue

    def losing_the_first_reply(connection: Any) -> Any:
        monkeypatch.setattr(connections, "read", real_read)
        poll(lambda: watcher.zcard(queue) == 1)  # the claim ran
        connection.disconnect()
        return real_read(connection)

    monkeypatch.setattr(connections, "read", losing_the_first_reply)
    try:
        claimed = orchestrator.claim("r1", 1, 30)
    finally:
        watcher.close()
    assert [c.invocation_id for c in claimed] == [first.invocation_id]
    assert queued(orchestrator) == 1 and owned_by(orchestrator, "r1") == {first.invocation_id}
