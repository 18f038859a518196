"""Core behaviour on a 3-node Redis Cluster (tests/redis_servers.py ``redis_cluster``).

Every key of an app carries the ``{app_id}`` hash tag and every script gets its
keys in KEYS, so the scripts run unchanged on a cluster (no CROSSSLOT). The
behavioural tests imported below run here with an ``app`` on the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pynenc import Pynenc
from pynenc.models import Outcome, OutcomeKind
from pynenc.redis_keys import RedisKeys
from pynenc.redis_scripts import load_library, load_scripts
from pynenc.status import InvocationStatus as S
from tests.integration import behaviour_tasks
from tests.integration.test_behaviour import (  # noqa: F401  (collected here, on the cluster)
    test_concurrency_controlled_final_without_reroute,
    test_cycle_error_can_be_caught_inside_the_task,
    test_fifty_parents_waiting_on_three_children_with_two_slots,
    test_mutual_wait_raises_cycle_error_naming_the_chain,
    test_parallelize_yields_results_as_they_finish,
    test_priority_follows_the_number_of_waiters,
    test_registration_concurrency_task,
    test_result_status_and_attributes,
    test_retry_until_max_retries_then_failed,
    test_running_concurrency_keys_only_blocks_the_same_key,
    test_stop_runner_loop_leaves_nothing_running,
    test_task_exception_is_reraised_with_type_and_message,
)
from tests.integration.test_redis_backend import configure, orchestrator_of, poll, spec
from tests.redis_servers import RedisCluster


def cluster_url(cluster: RedisCluster) -> str:
    return f"redis+cluster://127.0.0.1:{cluster.ports[0]}"


@pytest.fixture
def app(redis_cluster: RedisCluster) -> Iterator[Pynenc]:
    """The behaviour tasks' app on the cluster (same settings as tests/integration/conftest.py)."""

    def on_cluster(target: Pynenc) -> None:
        target.conf.redis_url = cluster_url(redis_cluster)
        target.conf.orchestrator_cls = "RedisOrchestrator"
        target.conf.broker_cls = "RedisBroker"
        target.conf.state_backend_cls = "RedisStateBackend"

    with behaviour_tasks.prepared_app("cl", on_cluster) as target:
        yield target


def test_app_keys_live_on_one_slot_of_the_cluster(app: Pynenc, redis_cluster: RedisCluster, runner: object) -> None:
    assert behaviour_tasks.add(2, 3).result == 5
    client = redis_cluster.client(decode_responses=True)
    try:
        keys = RedisKeys(app.app_id).all_keys()
        slots = {client.keyslot(key) for key in keys}
        assert len(slots) == 1
        # The data really is on the cluster: the node that owns the slot holds the status hash.
        assert client.hlen(RedisKeys(app.app_id).state) == 1
    finally:
        client.close()
    assert app.orchestrator.status_counts() == {S.SUCCESS: 1}


def test_every_script_runs_on_the_cluster(redis_cluster: RedisCluster) -> None:
    """Each transition script once on the cluster: none may touch a key outside its KEYS/slot."""
    target = configure(Pynenc(app_id="cluster-scripts"), cluster_url(redis_cluster))
    orchestrator = orchestrator_of(target)
    state = target.state_backend
    used: set[str] = set()
    real_run = state.conn.run  # type: ignore[attr-defined]

    def recording_run(name: str, keys: list[str], args: list[object]) -> object:
        used.add(name)
        return real_run(name, keys, args)

    state.conn.run = recording_run  # type: ignore[attr-defined]
    try:
        parent, child, other, helped = spec(), spec(), spec(), spec()
        orchestrator.register([parent, child, other, helped])
        [claimed] = orchestrator.claim("r1", 1, 30)
        assert orchestrator.wait("r1", claimed.invocation_id, [child.invocation_id, helped.invocation_id])
        reply = orchestrator.claim_awaited("r1", claimed.invocation_id, [helped.invocation_id], 30)
        assert [c.invocation_id for c in reply.claimed] == [helped.invocation_id]
        finished = (helped.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
        reply = orchestrator.claim_awaited("r1", claimed.invocation_id, [], 30, finished)
        assert reply.done and not reply.claimed and not reply.resumed  # the child is not final yet
        orchestrator.resume("r1", claimed.invocation_id)
        assert orchestrator.renew_leases("r1", [claimed.invocation_id], 30) == []
        orchestrator.release("r1", [claimed.invocation_id])
        [claimed] = orchestrator.claim("r1", 1, 0.01)
        assert orchestrator.kill(other.invocation_id) and orchestrator.retry(other.invocation_id)
        assert orchestrator.fail_queued(other.invocation_id, ValueError("operator gave up"))
        orchestrator.broker.enqueue(child.invocation_id, 2)
        assert orchestrator.broker.peek(1) == [(child.invocation_id, 2)]
        orchestrator.wake_idle_runners(2)
        poll(lambda: orchestrator.recover_expired(3) == [claimed.invocation_id])
        first, second = orchestrator.claim("r2", 2, 30)
        assert orchestrator.finish("r2", first.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
        done, following = orchestrator.finish_and_claim(
            "r2", second.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"), 1, 30
        )
        assert done
        for item in following:
            assert orchestrator.finish("r2", item.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
        state.conn.command("HSET", state.keys.key("status"), "from-0.1", "SUCCESS")  # pynenc 0.1's hashes
        state.conn.command("HSET", state.keys.key("history"), "from-0.1", "[]")
        state._upgrade()  # type: ignore[attr-defined]  # what a connecting process does
        assert orchestrator.get_status("from-0.1") is S.SUCCESS
        target.conf.result_ttl = 0.0
        assert orchestrator.expire_results() >= 3  # the FAILED one and the two just finished
        assert orchestrator.get_record(other.invocation_id) is None
        state.publish_info("supervisor", "host", {"ok": True}, 30)
        assert state.list_info("supervisor") == {"host": {"ok": True}}
    finally:
        del state.conn.run  # type: ignore[attr-defined]
        target.purge()
        target.close()
    assert used == set(load_scripts())
    for node in redis_cluster.nodes:  # the library was loaded on every node, not only where first used
        client = node.client()
        try:
            assert client.function_list(library=load_library().name), f"library missing on node {node.port}"
        finally:
            client.close()


def test_a_cluster_that_lost_the_library_gets_it_again(redis_cluster: RedisCluster) -> None:
    """FUNCTION FLUSH on every node (or a node added empty): the next call loads the library again."""
    target = configure(Pynenc(app_id="cluster-reload"), cluster_url(redis_cluster))
    orchestrator = orchestrator_of(target)
    try:
        orchestrator.register([spec()])
        for node in redis_cluster.nodes:
            client = node.client()
            try:
                client.function_flush()
            finally:
                client.close()
        [claimed] = orchestrator.claim("r1", 1, 30)
        assert orchestrator.finish("r1", claimed.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
        assert orchestrator.status_counts() == {S.SUCCESS: 1}
    finally:
        target.purge()
        target.close()


def test_loading_the_library_reaches_every_primary_that_lacks_it(redis_cluster: RedisCluster) -> None:
    """Only the last primary visited lost the library: the load must not stop at the first
    node answering "already exists" (redis-py's fan-out to all primaries does)."""
    target = configure(Pynenc(app_id="cluster-reload-one"), cluster_url(redis_cluster))
    conn = orchestrator_of(target).conn
    try:
        conn.preload_scripts()
        cluster_client = conn.client
        last = cluster_client.get_primaries()[-1]
        cluster_client.execute_command("FUNCTION FLUSH", target_nodes=last)
        conn._load_library(cluster_client)
        for node in redis_cluster.nodes:
            client = node.client()
            try:
                assert client.function_list(library=load_library().name), f"library missing on node {node.port}"
            finally:
                client.close()
    finally:
        target.close()
