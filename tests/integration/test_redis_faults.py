"""Faults while work runs: the script cache flushed, Redis restarted (appendonly on).

The first GATED_FROM invocations finish, the next ones block inside the task on
GATE (so the fault hits while invocations are RUNNING and others are queued),
then the gate opens and the whole run must complete with nothing lost.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pynenc import Pynenc
from pynenc.status import InvocationStatus as S
from tests.integration.test_redis_backend import (
    GATE,
    GATED_FROM,
    RunnerThread,
    app,
    configure,
    gated_square,
    orchestrator_of,
    poll,
)
from tests.redis_servers import RedisServer

TOTAL = 300


@pytest.fixture(autouse=True)
def closed_gate() -> Iterator[None]:
    GATE.clear()
    yield
    GATE.set()


def stuck_mid_run(target: Pynenc) -> None:
    """Wait until the ungated invocations are final and gated ones are RUNNING (blocked)."""
    orchestrator = orchestrator_of(target)

    def reached() -> bool:
        counts = orchestrator.status_counts()
        return counts.get(S.SUCCESS, 0) == GATED_FROM and counts.get(S.RUNNING, 0) == 4

    poll(reached)


def test_script_flush_mid_run(fresh_redis_server: RedisServer) -> None:
    target = configure(app, fresh_redis_server.url, max_threads=4)
    client = fresh_redis_server.client()
    runner = RunnerThread(target)
    try:
        group = gated_square.parallelize([(i,) for i in range(TOTAL)])
        stuck_mid_run(target)
        client.script_flush()
        assert client.script_exists(*[s.sha for s in target.state_backend.conn.scripts.values()]) == [False] * len(
            target.state_backend.conn.scripts
        )
        GATE.set()
        assert sorted(group.results) == sorted(i * i for i in range(TOTAL))
    finally:
        runner.stop()
        client.close()
    assert orchestrator_of(target).status_counts() == {S.SUCCESS: TOTAL}
    target.purge()
    target.reset_components()


def test_redis_restart_mid_run_loses_nothing(redis_aof_server: RedisServer) -> None:
    # Short leases so that a claim whose reply was lost in the restart is recovered quickly.
    target = configure(app, redis_aof_server.url, max_threads=4, lease_seconds=1.5, recovery_interval=0.3)
    runner = RunnerThread(target)
    try:
        invocations = [gated_square(i) for i in range(TOTAL)]
        stuck_mid_run(target)
        redis_aof_server.restart()
        GATE.set()
        assert [inv.get_result(timeout=60) for inv in invocations] == [i * i for i in range(TOTAL)]
    finally:
        runner.stop()
    assert orchestrator_of(target).status_counts() == {S.SUCCESS: TOTAL}
    target.purge()
    target.reset_components()
