"""Faults while work runs: the script cache flushed, Redis restarted (appendonly on)."""

from __future__ import annotations

from pynenc import Pynenc
from pynenc.status import InvocationStatus as S
from tests.integration.test_redis_backend import RunnerThread, app, configure, orchestrator_of, poll, slow_square
from tests.redis_servers import RedisServer


def final_count(target: Pynenc) -> int:
    counts = orchestrator_of(target).status_counts()
    return sum(n for status, n in counts.items() if status.is_final)


def test_script_flush_mid_run(fresh_redis_server: RedisServer) -> None:
    target = configure(app, fresh_redis_server.url, max_threads=4)
    client = fresh_redis_server.client()
    runner = RunnerThread(target)
    try:
        group = slow_square.parallelize([(i,) for i in range(300)])
        poll(lambda: final_count(target) >= 30)
        client.script_flush()
        assert final_count(target) < 300, "the run ended before the flush: nothing was tested"
        assert sorted(group.results) == sorted(i * i for i in range(300))
    finally:
        runner.stop()
        client.close()
    assert orchestrator_of(target).status_counts() == {S.SUCCESS: 300}
    target.purge()
    target.reset_components()


def test_redis_restart_mid_run_loses_nothing(redis_aof_server: RedisServer) -> None:
    # Short leases so a claim whose reply was lost in the restart is recovered quickly.
    target = configure(
        app,
        redis_aof_server.url,
        max_threads=4,
        lease_seconds=1.5,
        recovery_interval=0.3,
    )
    runner = RunnerThread(target)
    try:
        invocations = [slow_square(i) for i in range(300)]
        poll(lambda: final_count(target) >= 30)
        redis_aof_server.restart()
        assert final_count(target) < 300, "the run ended before the restart: nothing was tested"
        assert [inv.get_result(timeout=60) for inv in invocations] == [i * i for i in range(300)]
    finally:
        runner.stop()
    counts = orchestrator_of(target).status_counts()
    assert counts == {S.SUCCESS: 300}
    target.purge()
    target.reset_components()
