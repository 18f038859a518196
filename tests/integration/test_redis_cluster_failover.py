"""The primary holding an app dies mid-work: its replica takes over and no invocation is lost.

All keys of an app share one hash tag, so one primary of the cluster holds the whole app.
Here it is SIGKILLed while runners are working. The cluster promotes its replica
(``cluster-node-timeout`` 2 s); until then every call fails, and pynenc keeps retrying
(``redis_retry_seconds``) and then follows the new topology. Whatever the replica had not
received yet (a finish, a claim) is repaired by the leases: an invocation left RUNNING or
PENDING with an expired lease is recovered and runs again (at least once).

The registrations are replicated before the kill: asynchronous replication can lose writes
acknowledged just before a primary dies, registrations included (docs/redis.md). The test
shows what pynenc promises on top of that, not what Redis cannot.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pynenc import Pynenc
from pynenc.redis_keys import RedisKeys
from pynenc.status import InvocationStatus as S
from tests.redis_servers import HOST, RedisCluster, RedisServer

app = Pynenc(app_id="failover")

#: runs per argument (an invocation whose finish the replica missed runs again)
RUNS: dict[int, int] = {}
_runs_lock = threading.Lock()


@app.task
def slow_square(x: int) -> int:
    with _runs_lock:
        RUNS[x] = RUNS.get(x, 0) + 1
    time.sleep(0.02)
    return x * x


def poll(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.05)


def replication_offsets(node: RedisServer) -> tuple[int, list[int]]:
    """The primary's replication offset and each connected replica's acknowledged offset."""
    info = node.client().info("replication")
    replicas = [int(value["offset"]) for key, value in info.items() if key.startswith("slave") and "offset" in value]
    return int(info["master_repl_offset"]), replicas


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(replicas=1) as started:
        yield started


def test_the_apps_primary_dies_mid_work_and_every_invocation_still_succeeds(cluster: RedisCluster) -> None:
    app.conf.app_id = f"fo-{uuid.uuid4().hex[:8]}"
    client = cluster.client()
    status_key = RedisKeys(app.conf.app_id).status
    owner = client.get_node_from_key(status_key)
    # The URL names the very node that dies: the app must not depend on it afterwards.
    app.conf.redis_url = f"redis+cluster://{HOST}:{owner.port}"
    app.conf.orchestrator_cls = "RedisOrchestrator"
    app.conf.broker_cls = "RedisBroker"
    app.conf.state_backend_cls = "RedisStateBackend"
    app.conf.runner_cls = "ThreadRunner"
    app.conf.max_threads = 4
    app.conf.lease_seconds = 2.0
    app.conf.recovery_interval = 0.5
    app.conf.redis_retry_seconds = 60.0
    app.conf.logging_level = "ERROR"
    RUNS.clear()
    try:
        invocations = slow_square.parallelize([(x,) for x in range(120)])
        primary = next(node for node in cluster.nodes if node.port == owner.port)
        poll(
            lambda: (lambda mine, theirs: bool(theirs) and min(theirs) >= mine)(*replication_offsets(primary)),
            20,
            "the replica acknowledged the registrations",
        )

        runner = app.runner
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            poll(lambda: len(RUNS) >= 20, 30, "20 invocations ran before the kill")
            primary.close(graceful=False)  # SIGKILL: no shutdown, no last replication
            killed_at = time.monotonic()
            for x, invocation in enumerate(invocations):
                assert invocation.get_result(timeout=90) == x * x
            recovered_in = time.monotonic() - killed_at
            # The result subscriber left the dead node for a live one (waits are woken, not polled).
            orchestrator = app.orchestrator
            watcher = orchestrator.conn.watcher(orchestrator.keys.final_channel)
            assert watcher.subscribed.wait(30)
            assert slow_square(1000).get_result(timeout=30) == 1000 * 1000
        finally:
            runner.stop_runner_loop()
            thread.join(30)
        assert not thread.is_alive()

        survivor = next(node for node in cluster.nodes if node.running)
        promoted = redis.Redis(host=HOST, port=survivor.port).execute_command("CLUSTER", "SLOTS")
        owners = {int(entry[2][1]) for entry in promoted}
        assert owner.port not in owners  # the slot moved to the promoted replica
        statuses = [app.orchestrator.get_status(invocation.invocation_id) for invocation in invocations]
        assert statuses == [S.SUCCESS] * len(invocations)
        assert sorted(RUNS) == [*range(120), 1000]  # each ran at least once
        assert recovered_in < 90
    finally:
        client.close()
        app.reset_components()
