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

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynenc import Pynenc
from pynenc.redis_keys import RedisKeys
from pynenc.status import InvocationStatus as S
from tests.integration.test_supervisor_tasks import Daemon, wait_until
from tests.redis_servers import HOST, RedisCluster, RedisServer

app = Pynenc()  # the app id comes from the test (and PYNENC__APP_ID in a supervisor)
APP_SPEC = "tests.integration.test_redis_cluster_failover.app"

#: runs per argument (an invocation whose finish the replica missed runs again)
RUNS: dict[int, int] = {}
_runs_lock = threading.Lock()


@app.task
def slow_square(x: int) -> int:
    with _runs_lock:
        RUNS[x] = RUNS.get(x, 0) + 1
    time.sleep(0.02)
    return x * x


def replication_offsets(node: RedisServer) -> tuple[int, list[int]]:
    """The primary's replication offset and each connected replica's acknowledged offset."""
    client = node.client()
    try:
        info = client.info("replication")
    finally:
        client.close()
    replicas = [int(value["offset"]) for key, value in info.items() if key.startswith("slave") and "offset" in value]
    return int(info["master_repl_offset"]), replicas


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(replicas=1) as started:
        yield started


SETTINGS = {
    "orchestrator_cls": "RedisOrchestrator",
    "broker_cls": "RedisBroker",
    "state_backend_cls": "RedisStateBackend",
    "lease_seconds": 2.0,
    "recovery_interval": 0.5,
    "redis_retry_seconds": 60.0,
}


def app_on_its_primary(cluster: RedisCluster) -> tuple[RedisServer, dict[str, str]]:
    """Point ``app`` at a fresh app id whose URL names the primary holding it (the node the
    test kills: the app must not depend on it afterwards); that node, and the same settings
    as environment variables for a supervisor."""
    app.conf.app_id = f"fo-{uuid.uuid4().hex[:8]}"
    client = cluster.client()
    try:
        owner = client.get_node_from_key(RedisKeys(app.conf.app_id).state)
    finally:
        client.close()
    app.conf.redis_url = f"redis+cluster://{HOST}:{owner.port}"
    app.conf.logging_level = "ERROR"
    env = {"PYNENC__APP_ID": app.conf.app_id, "PYNENC__REDIS_URL": app.conf.redis_url}
    for name, value in SETTINGS.items():
        setattr(app.conf, name, value)
        env[f"PYNENC__{name.upper()}"] = str(value)
    primary = next(node for node in cluster.nodes if node.port == owner.port)
    return primary, env


def replica_caught_up(primary: RedisServer) -> bool:
    mine, theirs = replication_offsets(primary)
    return bool(theirs) and min(theirs) >= mine


def wait_replicated(primary: RedisServer) -> None:
    wait_until(lambda: replica_caught_up(primary), 20, "the replica acknowledged the registrations")


def assert_failed_over(cluster: RedisCluster, primary: RedisServer) -> None:
    survivor = next(node for node in cluster.nodes if node.running)
    client = survivor.client()
    try:
        slots = client.execute_command("CLUSTER", "SLOTS")
    finally:
        client.close()
    assert primary.port not in {int(entry[2][1]) for entry in slots}  # a promoted replica holds them


def test_the_apps_primary_dies_mid_work_and_every_invocation_still_succeeds(cluster: RedisCluster) -> None:
    primary, _ = app_on_its_primary(cluster)
    app.conf.runner_cls = "ThreadRunner"
    app.conf.max_threads = 4
    RUNS.clear()
    try:
        invocations = slow_square.parallelize([(x,) for x in range(120)])
        wait_replicated(primary)
        runner = app.runner
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(RUNS) >= 20, 30, "20 invocations ran before the kill")
            primary.close(graceful=False)  # SIGKILL: no shutdown, no last replication
            for x, invocation in enumerate(invocations):
                assert invocation.get_result(timeout=90) == x * x
            # The result subscriber left the dead node for a live one (waits are woken, not polled).
            orchestrator = app.orchestrator
            watcher = orchestrator.conn.watcher(orchestrator.keys.final_channel)
            assert watcher.subscribed.wait(30)
            assert slow_square(1000).get_result(timeout=30) == 1000 * 1000
        finally:
            runner.stop_runner_loop()
            thread.join(30)
        assert not thread.is_alive()
        assert_failed_over(cluster, primary)
        statuses = [app.orchestrator.get_status(invocation.invocation_id) for invocation in invocations]
        assert statuses == [S.SUCCESS] * len(invocations)
        assert sorted(RUNS) == [*range(120), 1000]  # each ran at least once
    finally:
        app.reset_components()


def test_a_supervisor_pool_rides_out_the_failover_of_its_apps_primary(cluster: RedisCluster, tmp_path: Path) -> None:
    primary, env = app_on_its_primary(cluster)
    supervisor = Daemon(env, ["--processes", "2"], tmp_path / "supervisor.log", app_spec=APP_SPEC)
    try:
        invocations = slow_square.parallelize([(x,) for x in range(200)])
        wait_replicated(primary)
        supervisor.ready()
        orchestrator = app.orchestrator
        wait_until(
            lambda: orchestrator.status_counts().get(S.SUCCESS, 0) >= 30, 30, "30 invocations done before the kill"
        )
        primary.close(graceful=False)
        for x, invocation in enumerate(invocations):
            assert invocation.get_result(timeout=90) == x * x
        assert_failed_over(cluster, primary)
        assert len(supervisor.runner_pids()) == 2  # the same pool, or one it replaced: still whole
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    finally:
        supervisor.close()
        app.reset_components()
