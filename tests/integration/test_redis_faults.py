"""Faults while work runs: the script cache flushed, Redis restarted (appendonly on),
a runner process SIGKILLed.

In the first two, the first GATED_FROM invocations finish and the next ones block
inside the task on GATE (so the fault hits while invocations are RUNNING and
others are queued), then the gate opens and the whole run must complete with
nothing lost. In the third, another runner process recovers the dead one's work.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

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
    server_on_socket,
    square,
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

    seen: list[dict[S, int]] = []

    def reached() -> bool:
        seen.append(orchestrator.status_counts())
        return seen[-1].get(S.SUCCESS, 0) == GATED_FROM and seen[-1].get(S.RUNNING, 0) == 4

    try:
        poll(reached)
    except AssertionError:
        raise AssertionError(f"never {GATED_FROM} SUCCESS and 4 RUNNING; last counts {seen[-1]}") from None


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
def test_script_flush_mid_run(fresh_redis_server: RedisServer, functions: bool) -> None:
    target = configure(app, fresh_redis_server.url, max_threads=4, redis_functions=functions)
    client = fresh_redis_server.client()
    runner = RunnerThread(target)
    try:
        group = gated_square.parallelize([(i,) for i in range(TOTAL)])
        stuck_mid_run(target)
        client.script_flush()
        client.function_flush()
        assert client.script_exists(*[s.sha for s in target.state_backend.conn.scripts.values()]) == [False] * len(
            target.state_backend.conn.scripts
        )
        assert client.function_list() == []
        GATE.set()
        assert sorted(group.results) == sorted(i * i for i in range(TOTAL))
    finally:
        runner.stop()
        client.close()
    assert orchestrator_of(target).status_counts() == {S.SUCCESS: TOTAL}
    target.purge()
    target.reset_components()


@pytest.fixture
def aof_server_on_socket() -> Iterator[tuple[RedisServer, str]]:
    with server_on_socket(appendonly=True) as server_and_url:
        yield server_and_url


def test_redis_restart_mid_run_loses_nothing(aof_server_on_socket: tuple[RedisServer, str]) -> None:
    server, url = aof_server_on_socket
    # Short leases so that a claim whose reply was lost in the restart is recovered quickly.
    target = configure(app, url, max_threads=4, lease_seconds=1.5, recovery_interval=0.3)
    runner = RunnerThread(target)
    try:
        invocations = [gated_square(i) for i in range(TOTAL)]
        stuck_mid_run(target)
        pid_before = server.pid
        server.restart()
        assert server.pid != pid_before
        GATE.set()
        assert [inv.get_result(timeout=60) for inv in invocations] == [i * i for i in range(TOTAL)]
    finally:
        runner.stop()
    assert orchestrator_of(target).status_counts() == {S.SUCCESS: TOTAL}
    target.purge()
    target.reset_components()


def test_a_thread_runner_outlives_an_outage_longer_than_its_retries(
    aof_server_on_socket: tuple[RedisServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its claims give up after redis_retry_seconds; the loop logs, waits and claims again."""
    server, url = aof_server_on_socket
    target = configure(app, url, max_threads=2, redis_retry_seconds=0.3)
    orchestrator = orchestrator_of(target)
    claim_failed = threading.Event()
    real_claim = orchestrator.claim

    def claim(*args: Any) -> Any:
        try:
            return real_claim(*args)
        except Exception:
            claim_failed.set()
            raise

    monkeypatch.setattr(orchestrator, "claim", claim)
    runner = RunnerThread(target)
    try:
        assert square(2).get_result(timeout=10) == 4
        server.stop()
        assert claim_failed.wait(30)
        server.start()
        assert square(3).get_result(timeout=30) == 9
        assert runner.thread.is_alive()
    finally:
        runner.stop()
    target.purge()
    target.reset_components()


# ----- a runner process killed mid-run --------------------------------------------------------
#: Redis URL and key prefix the blocking task signals on; set by the test before forking.
SIGNALS: dict[str, str] = {}


def _signals() -> redis.Redis[str]:
    return redis.Redis.from_url(SIGNALS["url"], decode_responses=True)


@app.task
def blocking_square(x: int) -> int:
    # Signals go through Redis lists: a SIGKILLed process can leave no lock held behind.
    client = _signals()
    try:
        client.rpush(SIGNALS["prefix"] + "started", f"{x}:{os.getpid()}")
        if client.blpop([SIGNALS["prefix"] + "release"], timeout=60) is None:
            raise TimeoutError("the test never released the task")
    finally:
        client.close()
    return x * x


def _runner_process() -> None:
    app.runner.run()  # after fork the app builds a fresh runner and Redis connection


def test_sigkilled_runner_process_work_is_recovered_by_another(redis_server: RedisServer) -> None:
    SIGNALS.update(url=redis_server.url, prefix=f"signals:{uuid.uuid4().hex}:")
    client = _signals()
    context = multiprocessing.get_context("fork")
    target = configure(app, redis_server.url, max_threads=2, lease_seconds=1.0, recovery_interval=0.2)

    def started() -> set[str]:
        items = [client.blpop([SIGNALS["prefix"] + "started"], timeout=30) for _ in range(2)]
        assert None not in items, "the tasks did not start"
        return {item[1] for item in items if item is not None}

    invocations = [blocking_square(3), blocking_square(4)]
    first = context.Process(target=_runner_process, daemon=True)
    first.start()
    second = None
    try:
        assert started() == {f"3:{first.pid}", f"4:{first.pid}"}
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        second = context.Process(target=_runner_process, daemon=True)
        second.start()
        assert started() == {f"3:{second.pid}", f"4:{second.pid}"}
        client.rpush(SIGNALS["prefix"] + "release", "go", "go")
        assert [inv.get_result(timeout=30) for inv in invocations] == [9, 16]
    finally:
        for process in (first, second):
            if process is not None and process.is_alive():
                process.kill()
                process.join(10)
        client.delete(SIGNALS["prefix"] + "started", SIGNALS["prefix"] + "release")
        client.close()
    for invocation in invocations:
        record = orchestrator_of(target).get_record(invocation.invocation_id)
        assert record is not None and record.stalls == 1
        statuses = [h.status for h in record.history]
        assert statuses[:4] == [S.REGISTERED, S.PENDING, S.RUNNING, S.RUNNING_RECOVERY]
        assert statuses[-1] is S.SUCCESS
    target.purge()
    target.reset_components()
