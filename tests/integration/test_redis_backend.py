"""The Redis backend's own promises (beyond the behavioural suite): leases, recovery,
operator actions, isolation between apps, expiry, bad data and unreachable Redis.

Every test uses a real redis-server from tests/redis_servers.py and its own app id.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.conf.config_pynenc import ConfigPynenc
from pynenc.exceptions import (
    InvocationKilledError,
    PynencError,
    SerializationError,
    StalledInvocationError,
)
from pynenc.models import CallSpec, Outcome, OutcomeKind
from pynenc.orchestrator.redis_orchestrator import RedisOrchestrator
from pynenc.redis_keys import KEY_NAMES, RedisKeys
from pynenc.redis_scripts import load_scripts, prelude_source
from pynenc.redis_watch import FinalWatcher
from pynenc.serializer.base import encode_json
from pynenc.serializer.errors import decode_exception
from pynenc.state_backend import redis_state_backend
from pynenc.state_backend.redis_state_backend import RedisStateBackend
from pynenc.status import OWNED
from pynenc.status import InvocationStatus as S
from tests.redis_servers import RedisServer

app = Pynenc(app_id="redis-tests")


@app.task
def square(x: int) -> int:
    return x * x


#: Invocations of gated_square with x >= GATED_FROM wait for this event (set by the test).
GATE = threading.Event()
GATED_FROM = 30


@app.task
def gated_square(x: int) -> int:
    if x >= GATED_FROM and not GATE.wait(60):
        raise TimeoutError("the test never opened the gate")
    return x * x


#: Settings the tests change on the shared module app: back to their defaults for every test.
TUNED_SETTINGS = (
    "result_ttl", "lease_seconds", "recovery_interval", "max_stalls", "max_threads", "redis_retry_seconds",
    "redis_functions",
)  # fmt: skip


def configure(target: Pynenc, url: str, **values: Any) -> Pynenc:
    """Point ``target`` at Redis ``url`` under a fresh app id, with ``values`` on top."""
    for name in TUNED_SETTINGS:
        setattr(target.conf, name, ConfigPynenc.settings()[name].default)
    target.conf.app_id = f"rt-{uuid.uuid4().hex[:10]}"
    target.conf.redis_url = url
    target.conf.orchestrator_cls = "RedisOrchestrator"
    target.conf.broker_cls = "RedisBroker"
    target.conf.state_backend_cls = "RedisStateBackend"
    target.conf.runner_cls = "ThreadRunner"
    target.conf.logging_level = "ERROR"
    target.conf.dev_mode_force_sync_tasks = False
    for name, value in values.items():
        setattr(target.conf, name, value)
    return target


def poll(condition: Any, timeout: float = 15.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(interval)


def orchestrator_of(target: Pynenc) -> RedisOrchestrator:
    orchestrator = target.orchestrator
    assert isinstance(orchestrator, RedisOrchestrator)
    return orchestrator


def spec(task_id: str = "tests.integration.test_redis_backend.square", **kwargs: Any) -> CallSpec:
    invocation_id = uuid.uuid4().hex
    arguments = kwargs.pop("arguments", {"x": encode_json(3)})
    return CallSpec(invocation_id, task_id, arguments, call_key=kwargs.pop("call_key", invocation_id), **kwargs)


def history_of(orchestrator: Any, invocation_id: str) -> list[tuple[S, str | None]]:
    """An invocation's history as (status, runner) pairs, in order."""
    record = orchestrator.get_record(invocation_id)
    assert record is not None, f"invocation {invocation_id} not found"
    return [(entry.status, entry.runner_id) for entry in record.history]


@contextmanager
def server_on_socket(appendonly: bool = False) -> Iterator[tuple[RedisServer, str]]:
    """A private server the app reaches through a unix socket in the server's own temp dir.

    For tests that stop the server: while it is down its TCP port is free and another test
    process may start a server on it; nobody else can take a socket path inside our dir.
    """
    server = RedisServer(name="redis-socket", appendonly=appendonly, start=False)
    socket_path = server.dir / "redis.sock"
    server.extra_args += ["--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    try:
        server.start()
        yield server, f"unix://{socket_path}?db=0"
    finally:
        server.close()


class RunnerThread:
    """The app's ThreadRunner looping in a thread, stopped by the fixture."""

    def __init__(self, target: Pynenc) -> None:
        self.runner = target.runner
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.runner.stop_runner_loop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def rapp(redis_url: str) -> Iterator[Pynenc]:
    configure(app, redis_url, max_threads=4)
    yield app
    app.purge()
    app.reset_components()


@pytest.fixture
def start_runner(rapp: Pynenc) -> Iterator[Any]:
    started: list[RunnerThread] = []

    def start() -> RunnerThread:
        started.append(RunnerThread(rapp))
        return started[-1]

    yield start
    for runner in started:
        runner.stop()


# ----- leases and recovery -----------------------------------------------------------------
def test_stale_runner_late_finish_is_rejected(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    call = spec()
    orchestrator.register([call])
    [claimed] = orchestrator.claim("runner-a", 1, 0.05)
    poll(lambda: orchestrator.recover_expired(3) == [call.invocation_id])
    assert orchestrator.get_status(call.invocation_id) is S.REROUTED
    [again] = orchestrator.claim("runner-b", 1, 30)
    assert again.invocation_id == claimed.invocation_id
    assert not orchestrator.finish("runner-a", call.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json("late")))
    assert orchestrator.get_status(call.invocation_id) is S.RUNNING
    assert orchestrator.finish("runner-b", call.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json("b")))
    record = orchestrator.get_record(call.invocation_id)
    assert record is not None and record.result == encode_json("b") and record.stalls == 1
    assert [h.status for h in record.history] == [
        S.REGISTERED, S.PENDING, S.RUNNING, S.RUNNING_RECOVERY, S.REROUTED, S.PENDING, S.RUNNING, S.SUCCESS,
    ]  # fmt: skip
    assert record.history[2].runner_id == "runner-a" and record.history[-1].runner_id == "runner-b"


def test_renew_keeps_the_lease_and_reports_lost_ones(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    first, second = spec(), spec()
    orchestrator.register([first, second])
    orchestrator.claim("runner-a", 2, 30)
    assert orchestrator.renew_leases("runner-a", [first.invocation_id, second.invocation_id], 30) == []
    assert orchestrator.renew_leases("runner-b", [first.invocation_id], 30) == [first.invocation_id]
    assert orchestrator.recover_expired(3) == []


@pytest.mark.parametrize(
    ("seconds", "microseconds", "offset", "now", "later"),
    [
        (1764300000, 45, 1.25, "1764300000.000045", "1764300001.250045"),
        (1764300000, 999999, 0.000001, "1764300000.999999", "1764300001.000000"),
        (1764300000, 5, -0.5, "1764300000.000005", "1764299999.500005"),
        (1764300000, 0, 30, "1764300000.000000", "1764300030.000000"),
        (1764300000, 123456, 0.0000004, "1764300000.123456", "1764300000.123456"),
    ],
)
def test_script_times_are_the_servers_clock_with_six_exact_decimals(
    redis_server: RedisServer, seconds: int, microseconds: int, offset: float, now: str, later: str
) -> None:
    """History times and lease ends are built from TIME's digits, not by printing a float:
    zero-padded microseconds, carries across the second, negative offsets (expiry cutoffs)."""
    probe = prelude_source() + "\nset_now(ARGV[1], ARGV[2])\nreturn {NOW, time_in(tonumber(ARGV[3]))}"
    reply = redis_server.client().eval(probe, 0, seconds, microseconds, repr(offset))
    assert [value.decode() for value in reply] == [now, later]


def test_past_max_stalls_the_invocation_fails_saying_so(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    call = spec()
    orchestrator.register([call])
    for stall in range(3):
        assert [c.invocation_id for c in orchestrator.claim(f"runner-{stall}", 1, 0.01)] == [call.invocation_id]
        poll(lambda: orchestrator.recover_expired(2) == [call.invocation_id])
    assert orchestrator.get_status(call.invocation_id) is S.FAILED
    assert orchestrator.claim("runner-x", 1, 30) == []
    record = orchestrator.get_record(call.invocation_id)
    assert record is not None and record.stalls == 3 and record.error is not None
    error = decode_exception(record.error)
    assert isinstance(error, StalledInvocationError)
    assert "lost its runner 3 times" in str(error) and "max_stalls=2" in str(error)


def test_release_puts_work_back_at_the_front_without_a_stall(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    first, second = spec(), spec()
    orchestrator.register([first, second])
    [claimed] = orchestrator.claim("runner-a", 1, 30)
    orchestrator.release("runner-a", [claimed.invocation_id])
    record = orchestrator.get_record(first.invocation_id)
    assert record is not None and record.status is S.REROUTED and record.stalls == 0 and record.owner is None
    assert [c.invocation_id for c in orchestrator.claim("runner-b", 2, 30)] == [
        first.invocation_id,
        second.invocation_id,
    ]


# ----- operator actions --------------------------------------------------------------------
def test_kill_and_retry(rapp: Pynenc, start_runner: Any) -> None:
    orchestrator = orchestrator_of(rapp)
    invocation = square(7)
    assert orchestrator.kill(invocation.invocation_id)
    assert not orchestrator.kill(invocation.invocation_id)
    with pytest.raises(InvocationKilledError):
        invocation.get_result(timeout=10)
    assert orchestrator.queue_depth() == 0
    assert orchestrator.retry(invocation.invocation_id)
    assert not orchestrator.retry(invocation.invocation_id)
    start_runner()
    assert invocation.get_result(timeout=10) == 49


def test_a_batch_mixing_keyed_and_plain_calls_queues_in_call_order(rapp: Pynenc) -> None:
    # register writes a batch's plain calls together at the end and keyed ones at once:
    # the queue must still follow the call order, and a repeated key within the batch dedups.
    orchestrator = orchestrator_of(rapp)
    calls = [spec(), spec(registration_key="k1"), spec(), spec(registration_key="k1"), spec()]
    outcomes = orchestrator.register(calls)
    assert [o.created for o in outcomes] == [True, True, True, False, True]
    assert outcomes[3].invocation_id == calls[1].invocation_id
    claimed = [c.invocation_id for c in orchestrator.claim("runner-a", 10, 30)]
    assert claimed == [calls[i].invocation_id for i in (0, 1, 2, 4)]


# ----- blocking without polling -------------------------------------------------------------
def test_idle_runner_wakes_on_register(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    woke = threading.Event()
    returned = threading.Event()

    def idle() -> None:
        orchestrator.wait_for_work(30)
        woke.set()
        returned.set()

    waiter = threading.Thread(target=idle, daemon=True)
    waiter.start()
    orchestrator.register([spec()])
    assert woke.wait(10), "wait_for_work did not wake up on register"
    waiter.join(10)
    assert returned.is_set()


def test_every_idle_runner_wakes_for_a_batch(rapp: Pynenc, redis_server: RedisServer) -> None:
    # A batch of several invocations wakes as many idle runners as it has invocations,
    # not just one (the others would sleep while work waits).
    orchestrator = orchestrator_of(rapp)
    woke = threading.Semaphore(0)
    sleeping = threading.Barrier(4)

    def idle() -> None:
        sleeping.wait(10)
        orchestrator.wait_for_work(30)
        woke.release()

    waiters = [threading.Thread(target=idle, daemon=True) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    sleeping.wait(10)
    poll_until = time.monotonic() + 10
    clients = redis_server.client(decode_responses=True)
    while len([c for c in clients.client_list() if c.get("cmd") == "blpop"]) < 3:
        assert time.monotonic() < poll_until, "the idle runners never blocked"
        time.sleep(0.01)
    orchestrator.register([spec() for _ in range(3)])
    assert all(woke.acquire(timeout=10) for _ in range(3)), "a batch of 3 did not wake 3 idle runners"


def test_result_waiter_wakes_on_finish(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    call = spec()
    orchestrator.register([call])
    done: list[dict[str, str | None]] = []
    thread = threading.Thread(target=lambda: done.append(orchestrator.wait_final([call.invocation_id], 30)))
    thread.start()
    [claimed] = orchestrator.claim("runner-a", 1, 30)
    assert orchestrator.finish("runner-a", claimed.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(9)))
    thread.join(10)
    assert done == [{call.invocation_id}]


def test_the_subscriber_leaves_the_channel_when_nobody_waits_and_comes_back_for_a_waiter(
    rapp: Pynenc, redis_server: RedisServer
) -> None:
    # A process that waited once must not keep receiving every final event of the app.
    orchestrator = orchestrator_of(rapp)
    client = redis_server.client(decode_responses=True)
    channel = orchestrator.keys.final_channel

    def subscribers() -> int:
        return int(dict(client.pubsub_numsub(channel))[channel])

    def wait_while_it_finishes(call: CallSpec) -> None:
        waited: list[set[str]] = []
        thread = threading.Thread(target=lambda: waited.append(orchestrator.wait_final([call.invocation_id], 30)))
        thread.start()
        poll(lambda: subscribers() == 1)  # subscribed for this waiter
        [claimed] = orchestrator.claim("runner-a", 1, 30)
        assert orchestrator.finish("runner-a", claimed.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(1)))
        thread.join(10)
        assert waited == [{call.invocation_id}]

    first, second = spec(), spec()
    orchestrator.register([first, second])
    wait_while_it_finishes(first)
    poll(lambda: subscribers() == 0)  # nobody waits: unsubscribed after the linger
    wait_while_it_finishes(second)  # a new waiter subscribes again


def test_a_stale_final_message_does_not_end_the_wait(rapp: Pynenc, redis_server: RedisServer) -> None:
    # A message for an id that is not final (e.g. delivered late for an invocation an operator
    # retried since) must not make wait_final report it final.
    orchestrator = orchestrator_of(rapp)
    call = spec()
    orchestrator.register([call])
    returned = threading.Event()
    client = redis_server.client(decode_responses=True)

    def keep_publishing() -> None:
        while not returned.wait(0.01):
            client.publish(orchestrator.keys.final_channel, call.invocation_id)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        assert orchestrator.wait_final([call.invocation_id], 0.5) == set()
        assert orchestrator.wait_final_record(call.invocation_id, 0.3) is None
    finally:
        returned.set()
        publisher.join(5)


# ----- isolation, purge, expiry, info -------------------------------------------------------
def test_purge_removes_only_this_apps_keys(redis_server: RedisServer) -> None:
    other = configure(Pynenc(app_id="other"), redis_server.url)
    mine = configure(Pynenc(app_id="mine"), redis_server.url)
    client = redis_server.client(decode_responses=True)
    foreign = f"not-pynenc:{uuid.uuid4().hex}"
    try:
        client.set(foreign, "1")
        kept = spec()
        orchestrator_of(other).register([kept])
        orchestrator_of(mine).register([spec(), spec()])
        mine.state_backend.publish_info("supervisor", "host-1", {"pid": 1}, 60)
        assert orchestrator_of(mine).status_counts() == {S.REGISTERED: 2}
        mine.purge()
        assert list(client.scan_iter(match=f"pynenc:{{{mine.app_id}}}:*")) == []
        assert orchestrator_of(mine).status_counts() == {}
        assert orchestrator_of(other).get_status(kept.invocation_id) is S.REGISTERED
        assert orchestrator_of(other).queue_depth() == 1
        assert client.get(foreign) == "1"
    finally:
        other.purge()
        client.delete(foreign)
        client.close()
        other.close()
        mine.close()


def test_every_key_written_is_in_the_schema(rapp: Pynenc, start_runner: Any, redis_server: RedisServer) -> None:
    start_runner()
    assert [i.result for i in [square(2), square(3)]] == [4, 9]
    rapp.state_backend.publish_info("runner", "r1", {"alive": True}, 60)
    client = redis_server.client(decode_responses=True)
    try:
        written = set(client.scan_iter(match=f"*{rapp.app_id}*"))
    finally:
        client.close()
    keys = RedisKeys(rapp.app_id)
    assert written and written <= set(keys.all_keys())
    assert all(f"{{{rapp.app_id}}}" in key for key in written)
    assert {"spec", "state", "result", "final_at", "info"} <= {k.rsplit(":", 1)[1] for k in written}
    assert set(KEY_NAMES) >= {k.rsplit(":", 1)[1] for k in written}


def test_results_expire_after_result_ttl(rapp: Pynenc, start_runner: Any) -> None:
    start_runner()
    old = square(4)
    assert old.result == 16
    rapp.conf.result_ttl = 0.05
    orchestrator = orchestrator_of(rapp)
    poll(lambda: orchestrator.expire_results() >= 1 or orchestrator.get_status(old.invocation_id) is None)
    assert orchestrator.get_status(old.invocation_id) is None
    assert orchestrator.get_record(old.invocation_id) is None


def test_info_is_listed_by_kind_until_it_expires(rapp: Pynenc) -> None:
    state = rapp.state_backend
    state.publish_info("supervisor", "host-a", {"pid": 10, "slots": [1, 2]}, 60)
    state.publish_info("supervisor", "host-b", {"pid": 11}, 0.05)
    state.publish_info("runner", "r-1", {"pid": 12}, 60)
    assert state.list_info("supervisor")["host-a"] == {"pid": 10, "slots": [1, 2]}
    assert set(state.list_info("runner")) == {"r-1"}
    poll(lambda: "host-b" not in state.list_info("supervisor"))
    assert set(state.list_info("supervisor")) == {"host-a"}


@app.task
def gated_echo(text: str) -> str:
    if not GATE.wait(60):
        raise TimeoutError("the test never opened the gate")
    return text


@pytest.mark.parametrize("size, reads_after_final", [(10, 0), (2000, 1)], ids=["small", "large"])
@pytest.mark.parametrize("registered", ["before subscribing", "while subscribed"])
def test_what_a_result_wait_reads(
    rapp: Pynenc, start_runner: Any, size: int, reads_after_final: int, registered: str
) -> None:
    # A waiter outside a task first looks at the record, unless this process registered the
    # invocation under the subscription still up (then its final event cannot be missed and
    # it is known not final). A small SUCCESS result arrives with the final event and needs
    # no read; a large one is read.
    state = rapp.state_backend
    assert isinstance(state, RedisStateBackend)
    reads: list[str] = []
    real_get_record = state.get_record

    def counting_get_record(invocation_id: str) -> Any:
        reads.append(invocation_id)
        return real_get_record(invocation_id)

    state.get_record = counting_get_record  # type: ignore[method-assign]
    watcher = state.conn.watcher(state.keys.final_channel)
    GATE.clear()
    try:
        start_runner()
        if registered == "before subscribing":
            invocation = gated_echo("x" * size)
        watcher.LINGER_SECONDS = 60.0  # stays subscribed: no re-read for a new subscription
        watcher.unwatch([], watcher.watch([]))  # subscribes now
        # The confirmation wakes every waiter for a re-read, which must not land inside the
        # wait measured below (the subscriber wakes them before it marks itself subscribed).
        assert watcher.subscribed.wait(15)
        if registered == "while subscribed":
            invocation = gated_echo("x" * size)
        results: list[str] = []
        waiter = threading.Thread(target=lambda: results.append(invocation.get_result(timeout=30)))
        waiter.start()
        first_look = 1 if registered == "before subscribing" else 0
        # It waits (and has made its first look, if any): the gate may open.
        poll(
            lambda: watcher.waits_for(invocation.invocation_id) and reads.count(invocation.invocation_id) == first_look
        )
        GATE.set()
        waiter.join(30)
        assert results == ["x" * size]
        assert reads.count(invocation.invocation_id) == first_look + reads_after_final
    finally:
        GATE.set()
        del state.get_record
        watcher.LINGER_SECONDS = FinalWatcher.LINGER_SECONDS


@contextmanager
def waits_ending_by_timeout(watcher: FinalWatcher) -> Iterator[list[bool]]:
    """Record, for each block of a result wait, whether it ended by its timeout (True) rather
    than by a final event: a wait that missed an event still ends, after its one-second slice,
    by re-reading, so only this tells a missed event from a seen one."""
    ended_by_timeout: list[bool] = []
    real_wait = watcher.wait

    def recording_wait(event: threading.Event, timeout: float) -> None:
        real_wait(event, timeout)
        ended_by_timeout.append(not event.is_set())

    watcher.wait = recording_wait  # type: ignore[method-assign]
    try:
        yield ended_by_timeout
    finally:
        del watcher.wait


def test_a_result_published_before_the_wait_is_not_missed(rapp: Pynenc) -> None:
    # Registered under the subscription, finished before anyone waits: the subscriber saw the
    # final event, so the wait must not take the invocation for one still pending.
    orchestrator = orchestrator_of(rapp)
    watcher = orchestrator.conn.watcher(orchestrator.keys.final_channel)
    watcher.LINGER_SECONDS = 60.0
    try:
        watcher.unwatch([], watcher.watch([]))
        assert watcher.subscribed.wait(15)
        invocation = square(5)
        [claimed] = orchestrator.claim("runner-a", 1, 30)
        seen = watcher.watch([invocation.invocation_id])  # tells when the subscriber had the event
        assert orchestrator.finish("runner-a", claimed.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(25)))
        assert seen.wait(10)
        watcher.unwatch([invocation.invocation_id], seen)
        with waits_ending_by_timeout(watcher) as ended_by_timeout:
            assert invocation.get_result(timeout=10) == 25
        assert not any(ended_by_timeout)
    finally:
        watcher.LINGER_SECONDS = FinalWatcher.LINGER_SECONDS


def test_a_final_event_lost_while_the_subscriber_was_away_is_read(rapp: Pynenc, redis_server: RedisServer) -> None:
    # Registered under one subscription; the subscriber is cut off and cannot subscribe again
    # (SUBSCRIBE denied) while the invocation finishes, so its final event is lost. Under the
    # new subscription nothing is known of it: the wait reads its status and returns.
    orchestrator = orchestrator_of(rapp)
    watcher = orchestrator.conn.watcher(orchestrator.keys.final_channel)
    watcher.LINGER_SECONDS = 60.0
    admin = redis_server.client(decode_responses=True)
    try:
        watcher.unwatch([], watcher.watch([]))
        assert watcher.subscribed.wait(15)
        invocation = square(6)
        admin.execute_command("ACL", "SETUSER", "default", "-subscribe")
        admin.client_kill_filter(_type="pubsub")
        poll(lambda: not watcher.subscribed.is_set())
        [claimed] = orchestrator.claim("runner-a", 1, 30)
        assert orchestrator.finish("runner-a", claimed.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(36)))
        admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
        assert watcher.subscribed.wait(15)
        with waits_ending_by_timeout(watcher) as ended_by_timeout:
            assert invocation.get_result(timeout=10) == 36
        assert not any(ended_by_timeout)
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
        admin.close()
        watcher.LINGER_SECONDS = FinalWatcher.LINGER_SECONDS


def test_concurrent_waiters_each_get_their_result_whoever_reads(rapp: Pynenc) -> None:
    # One waiter at a time reads the subscription for everyone; when it leaves with its own
    # result, the others must still get theirs from the events, not from a timed-out re-read.
    orchestrator = orchestrator_of(rapp)
    watcher = orchestrator.conn.watcher(orchestrator.keys.final_channel)
    # The thread steps in to read after a quiet spell, which would hide a waiter left without
    # a reader: here only the waiters read, as in a busy client.
    watcher.QUIET_SECONDS = 60.0
    invocations = [square(i) for i in range(8)]
    claimed = {c.invocation_id: c for c in orchestrator.claim("runner-a", 8, 60)}
    assert set(claimed) == {inv.invocation_id for inv in invocations}
    results: dict[int, int] = {}
    with waits_ending_by_timeout(watcher) as ended_by_timeout:
        waiters = [
            threading.Thread(target=lambda i=i, inv=inv: results.__setitem__(i, inv.get_result(timeout=20)))
            for i, inv in enumerate(invocations)
        ]
        for waiter in waiters:
            waiter.start()
        poll(lambda: all(watcher.waits_for(inv.invocation_id) for inv in invocations))
        for i in [3, 0, 7, 1, 6, 2, 5, 4]:  # out of order: the first reader is not the first served
            payload = Outcome(OutcomeKind.SUCCESS, encode_json(i * i))
            assert orchestrator.finish("runner-a", invocations[i].invocation_id, payload)
        for waiter in waiters:
            waiter.join(20)
    assert results == {i: i * i for i in range(8)}
    assert not any(ended_by_timeout), "a waiter was left without a reader until its wait timed out"


def _idle_wait_blocked_in_blpop(
    orchestrator: RedisOrchestrator, admin: Any
) -> tuple[threading.Thread, list[list[Any]]]:
    """An idle runner's wait for work (claim_when_woken, 30 s) in a thread, returned once Redis
    shows it blocked in BLPOP; what it claims is appended to the list."""
    orchestrator.queue_depth()  # components built before the wait starts
    found: list[list[Any]] = []
    waiter = threading.Thread(target=lambda: found.append(orchestrator.claim_when_woken("r1", 1, 30, 30.0)))
    waiter.start()
    poll(lambda: any(c.get("cmd") == "blpop" for c in admin.client_list()))
    return waiter, found


def test_an_idle_runners_wait_ends_when_its_connection_is_killed(rapp: Pynenc, redis_server: RedisServer) -> None:
    # BLPOP and the claim share one connection: killed during the wait, the claim is run
    # again on a fresh connection and the call returns (the runner's loop goes on).
    orchestrator = orchestrator_of(rapp)
    admin = redis_server.client(decode_responses=True)
    try:
        waiter, found = _idle_wait_blocked_in_blpop(orchestrator, admin)
        blocked = [c["id"] for c in admin.client_list() if c.get("cmd") == "blpop"]
        admin.client_kill_filter(_id=blocked[0])
        waiter.join(15)
        assert not waiter.is_alive(), "the wait outlived its connection"
        assert found == [[]]  # the claim, run again, found nothing queued
        call = spec()
        orchestrator.register([call])
        assert [c.invocation_id for c in orchestrator.claim_when_woken("r1", 1, 30, 10.0)] == [call.invocation_id]
    finally:
        admin.close()


def test_counts_and_records_read_page_by_page_see_every_invocation(
    rapp: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inspection lists the status hash with HSCAN (never one HKEYS/HVALS that would block
    # Redis for seconds on a long history): several pages must add up to every invocation.
    monkeypatch.setattr(redis_state_backend, "SCAN_COUNT", 20)
    orchestrator = orchestrator_of(rapp)
    calls = [spec() for _ in range(600)]  # past 512 entries: a hashtable, scanned in pages
    orchestrator.register(calls)
    claimed = orchestrator.claim("r1", 40, 30)
    for item in claimed[:10]:
        orchestrator.finish("r1", item.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(1)))
    assert orchestrator.status_counts() == {S.REGISTERED: 560, S.RUNNING: 30, S.SUCCESS: 10}
    records = list(orchestrator.iter_records())
    assert sorted(r.invocation_id for r in records) == sorted(c.invocation_id for c in calls)


def test_owned_invocations_are_read_from_the_leases(rapp: Pynenc) -> None:
    # What a supervisor reads when a runner dies: only what is owned (from the leases), in
    # any owned status, whatever else is stored.
    orchestrator = orchestrator_of(rapp)
    calls = [spec() for _ in range(6)]
    orchestrator.register(calls)
    running = orchestrator.claim("r1", 2, 30)
    orchestrator.finish("r1", running[0].invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(1)))
    ahead = orchestrator.finish_start_claim(
        "r2", running[0].invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(1)), None, 2, 1, 30
    )().claimed  # r2 finishes nothing (not its own) and claims one RUNNING, one PENDING
    owned = {r.invocation_id: (r.status, r.owner) for r in orchestrator.iter_records(OWNED)}
    assert owned == {
        running[1].invocation_id: (S.RUNNING, "r1"),
        ahead[0].invocation_id: (S.RUNNING, "r2"),
        ahead[1].invocation_id: (S.PENDING, "r2"),
    }
    assert {r.invocation_id for r in orchestrator.iter_records({S.PENDING})} == {ahead[1].invocation_id}
    assert len(list(orchestrator.iter_records())) == 6


def test_a_runner_wanting_a_permit_ends_an_idle_wait(rapp: Pynenc, redis_server: RedisServer) -> None:
    # A pool runner idle on Redis holds its run permit while it waits (the claim runs the
    # moment work arrives); a paused invocation that wants that permit back wakes it: the
    # wait ends at once with nothing claimed.
    orchestrator = orchestrator_of(rapp)
    assert orchestrator.claims_when_woken
    admin = redis_server.client(decode_responses=True)
    try:
        waiter, found = _idle_wait_blocked_in_blpop(orchestrator, admin)
        orchestrator.wake_idle_runners(1)
        waiter.join(15)  # far below the wait's own 30 s
        assert not waiter.is_alive(), "the idle wait did not end when woken"
        assert found == [[]]
        assert orchestrator.status_counts() == {}
        assert admin.llen(orchestrator.keys.wake) == 0  # the marker was taken by that wait
        for _ in range(3):  # nobody waits now: the markers left stay capped
            orchestrator.wake_idle_runners(50)
        assert admin.llen(orchestrator.keys.wake) == 64  # the cap of new work's markers (WAKE_CAP)
    finally:
        admin.close()


@pytest.mark.parametrize("size, reads_per_finish", [(10, 0), (2000, 1)], ids=["small", "large"])
def test_waiting_for_a_whole_group_reads_statuses_only_for_events_without_a_result(
    rapp: Pynenc, size: int, reads_per_finish: int
) -> None:
    # What a paused task does for its group: one watch until every member is final. The
    # first look reads every status; then a small SUCCESS result on its final event needs no
    # read, a large one (the event carries only the id) is read.
    orchestrator = orchestrator_of(rapp)
    invocations = [square(i) for i in range(3)]
    ids = [inv.invocation_id for inv in invocations]
    claimed = orchestrator.claim("test-runner", 3, 60)
    assert sorted(c.invocation_id for c in claimed) == sorted(ids)
    reads: list[str] = []
    real_final_among = orchestrator._final_among

    def counting_final_among(invocation_ids: list[str]) -> Any:
        # Counted once read: the finishes below must come after the first look, or it could
        # find some final already and list them in its own order, not the order they ended.
        found = real_final_among(invocation_ids)
        reads.extend(invocation_ids)
        return found

    orchestrator._final_among = counting_final_among  # type: ignore[method-assign]
    watcher = orchestrator.conn.watcher(orchestrator.keys.final_channel)
    watcher.LINGER_SECONDS = 60.0  # stays subscribed: no re-read for a new subscription
    watcher.unwatch([], watcher.watch([]))  # subscribes now (a new subscription re-reads all)
    assert watcher.subscribed.wait(15)
    done: list[dict[str, str | None]] = []
    payload = encode_json("x" * size)
    try:
        waiter = threading.Thread(target=lambda: done.append(orchestrator.wait_all_final(ids, 30)))
        waiter.start()
        poll(lambda: len(reads) == 3)  # the first look: none final yet
        finishing_order = [ids[2], ids[0], ids[1]]
        for invocation_id in finishing_order:
            assert orchestrator.finish("test-runner", invocation_id, Outcome(OutcomeKind.SUCCESS, payload))
        waiter.join(30)
        assert len(reads) == 3 + reads_per_finish * len(ids)  # each id read at most once after its event
        # In the order they finished; a small result is handed over (the caller reads no record).
        assert list(done[0]) == finishing_order
        assert set(done[0].values()) == ({payload} if size < 512 else {None})
    finally:
        del orchestrator._final_among
        watcher.LINGER_SECONDS = FinalWatcher.LINGER_SECONDS


def test_a_paused_invocations_runner_hears_only_of_what_it_waits_on(rapp: Pynenc, redis_server: RedisServer) -> None:
    # A paused task's runner listens on its own channel; the scripts publish there the final
    # events of the invocations its paused ones wait on, and nothing else.
    orchestrator = orchestrator_of(rapp)
    waiting, awaited, unrelated = square(1), square(2), square(3)
    assert [c.invocation_id for c in orchestrator.claim("runner-a", 1, 60)] == [waiting.invocation_id]
    client = redis_server.client(decode_responses=True)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(orchestrator.keys.runner_final_channel("runner-a"))
        assert pubsub.get_message(timeout=10)["type"] == "subscribe"  # type: ignore[index]
        assert orchestrator.wait("runner-a", waiting.invocation_id, [awaited.invocation_id])
        claimed = {c.invocation_id for c in orchestrator.claim("runner-b", 2, 60)}
        assert claimed == {awaited.invocation_id, unrelated.invocation_id}
        for invocation_id in (unrelated.invocation_id, awaited.invocation_id):
            assert orchestrator.finish("runner-b", invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(4)))
        # The unrelated one finished first: had it been published here, it would come first.
        message = pubsub.get_message(timeout=10)
        assert message is not None and message["data"] == f"{awaited.invocation_id}\t{encode_json(4)}"
    finally:
        pubsub.close()
        client.close()


def test_a_runners_wait_listens_on_its_own_channel_and_wakes_from_it(rapp: Pynenc, redis_server: RedisServer) -> None:
    orchestrator = orchestrator_of(rapp)
    waiting, awaited = square(1), square(2)
    assert [c.invocation_id for c in orchestrator.claim("runner-a", 1, 60)] == [waiting.invocation_id]
    assert orchestrator.wait("runner-a", waiting.invocation_id, [awaited.invocation_id])
    client = redis_server.client(decode_responses=True)

    def subscribers(channel: str) -> int:
        return int(dict(client.pubsub_numsub(channel))[channel])

    done: list[dict[str, str | None]] = []
    thread = threading.Thread(
        target=lambda: done.append(orchestrator.wait_all_final([awaited.invocation_id], 60, "runner-a"))
    )
    try:
        thread.start()
        poll(lambda: subscribers(orchestrator.keys.runner_final_channel("runner-a")) == 1)
        assert subscribers(orchestrator.keys.final_channel) == 0  # not every final event of the app
        [claimed] = orchestrator.claim("runner-b", 1, 60)
        # A large result: the event carries only the id, so the wait must wake and read it.
        assert orchestrator.finish(
            "runner-b", claimed.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json("x" * 2000))
        )
        thread.join(15)  # far below the wait's own 60 s: only the runner channel's event wakes it
        assert done == [{awaited.invocation_id: None}]  # a large result is not carried: None
    finally:
        client.close()


def test_a_waiters_runner_claims_only_queued_awaited_ones_and_the_last_step_resumes_it(rapp: Pynenc) -> None:
    # claim_awaited: the runner of a paused waiter runs what it waits on itself.
    orchestrator = orchestrator_of(rapp)
    waiting, elsewhere, mine, unrelated = square(1), square(2), square(3), square(4)
    [claimed] = orchestrator.claim("runner-a", 1, 60)
    assert claimed.invocation_id == waiting.invocation_id
    awaited = [elsewhere.invocation_id, mine.invocation_id]
    assert orchestrator.wait("runner-a", waiting.invocation_id, awaited)
    [taken] = orchestrator.claim("runner-b", 1, 60)  # another runner takes the first awaited one
    assert taken.invocation_id == elsewhere.invocation_id
    reply = orchestrator.claim_awaited("runner-a", waiting.invocation_id, awaited, 60)
    assert [c.invocation_id for c in reply.claimed] == [mine.invocation_id]  # skips the one taken
    assert reply.examined == 2 and not reply.resumed
    assert orchestrator.get_status(mine.invocation_id) is S.RUNNING
    assert orchestrator.get_record(mine.invocation_id).owner == "runner-a"  # type: ignore[union-attr]
    ran = (mine.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(9)))
    reply = orchestrator.claim_awaited("runner-a", waiting.invocation_id, [], 60, ran)
    # Finished; the other awaited one still runs elsewhere: the waiter stays PAUSED.
    assert reply.done and not reply.claimed and not reply.resumed
    assert orchestrator.get_status(mine.invocation_id) is S.SUCCESS
    assert orchestrator.get_status(waiting.invocation_id) is S.PAUSED
    assert orchestrator.finish("runner-b", elsewhere.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(4)))
    reply = orchestrator.claim_awaited("runner-a", waiting.invocation_id, [], 60)
    assert reply.resumed  # everything it waits on is final
    record = orchestrator.get_record(waiting.invocation_id)
    assert record is not None and record.status is S.RESUMED and record.waiting_for == []
    orchestrator.resume("runner-a", waiting.invocation_id)  # a resume after it is harmless
    assert orchestrator.get_status(unrelated.invocation_id) is S.REGISTERED  # never claimed: not awaited


def test_wait_and_claim_pauses_the_waiter_and_claims_an_awaited_one_from_the_last(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    waiting, first, last = square(1), square(2), square(3)
    orchestrator.claim("runner-a", 1, 60)
    reply = orchestrator.wait_and_claim(
        "runner-a", waiting.invocation_id, [first.invocation_id, last.invocation_id], 60
    )
    assert reply is not None and reply.examined == 1
    assert [c.invocation_id for c in reply.claimed] == [last.invocation_id]  # others pop the front
    assert orchestrator.get_status(waiting.invocation_id) is S.PAUSED
    assert orchestrator.get_status(last.invocation_id) is S.RUNNING
    assert orchestrator.get_status(first.invocation_id) is S.REGISTERED
    # Sent again (its reply lost): it was recorded already, nothing more is claimed.
    again = orchestrator.wait_and_claim("runner-a", waiting.invocation_id, [first.invocation_id], 60)
    assert again is not None and again.claimed == []
    assert orchestrator.get_status(first.invocation_id) is S.REGISTERED


def test_helping_finishes_only_what_the_runner_owns(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    waiting, child = square(1), square(2)
    orchestrator.claim("runner-a", 1, 60)
    assert orchestrator.wait("runner-a", waiting.invocation_id, [child.invocation_id])
    orchestrator.claim("runner-b", 1, 60)
    stolen = (child.invocation_id, Outcome(OutcomeKind.SUCCESS, encode_json(4)))
    reply = orchestrator.claim_awaited("runner-a", waiting.invocation_id, [child.invocation_id], 60, stolen)
    assert not reply.done and not reply.claimed and not reply.resumed
    assert orchestrator.get_status(child.invocation_id) is S.RUNNING  # still runner-b's


# ----- bad data -----------------------------------------------------------------------------
def test_corrupted_payloads_fail_only_their_invocation(rapp: Pynenc, redis_server: RedisServer) -> None:
    orchestrator = orchestrator_of(rapp)
    keys = RedisKeys(rapp.app_id)
    healthy_before = square(1)
    broken_spec = square(2)
    broken_argument = square(3)
    healthy_after = square(4)
    client = redis_server.client(decode_responses=True)
    try:
        client.hset(keys.spec, broken_spec.invocation_id, "{this is not json")
        stored = client.hget(keys.spec, broken_argument.invocation_id)
        assert stored is not None
        client.hset(keys.spec, broken_argument.invocation_id, stored.replace('"j3"', '"j{3"'))
    finally:
        client.close()
    runner = RunnerThread(rapp)
    try:
        assert healthy_before.get_result(timeout=10) == 1
        assert healthy_after.get_result(timeout=10) == 16
        with pytest.raises(SerializationError, match="stored call is corrupted"):
            broken_spec.get_result(timeout=10)
        with pytest.raises(SerializationError, match="corrupted payload"):
            broken_argument.get_result(timeout=10)
        assert square(5).get_result(timeout=10) == 25  # the runner keeps serving
    finally:
        runner.stop()
    assert orchestrator.get_status(broken_spec.invocation_id) is S.FAILED


# ----- scripts ------------------------------------------------------------------------------
def test_every_script_compiles_on_a_real_server(redis_server: RedisServer) -> None:
    client = redis_server.client()
    try:
        for name, script in load_scripts().items():
            assert client.script_load(script.source) == script.sha, name
    finally:
        client.close()


def test_python_passes_each_script_the_keys_its_header_declares(rapp: Pynenc, start_runner: Any) -> None:
    state = rapp.state_backend
    assert isinstance(state, RedisStateBackend)
    calls: list[tuple[str, list[str]]] = []
    real_run = state.conn.run

    def recording_run(name: str, keys: list[str | bytes], args: list[Any]) -> Any:
        calls.append((name, [k.decode() if isinstance(k, bytes) else k for k in keys]))
        return real_run(name, keys, args)

    real_send = state.conn.send

    def recording_send(name: str, keys: list[str | bytes], args: list[Any]) -> Any:
        calls.append((name, [k.decode() if isinstance(k, bytes) else k for k in keys]))
        return real_send(name, keys, args)

    real_send_ahead = state.conn.send_ahead

    def recording_send_ahead(name: str, keys: list[str | bytes], args: list[Any], what: str) -> None:
        calls.append((name, [k.decode() if isinstance(k, bytes) else k for k in keys]))
        real_send_ahead(name, keys, args, what)

    state.conn.run = recording_run  # type: ignore[method-assign]
    state.conn.send = recording_send  # type: ignore[method-assign]
    state.conn.send_ahead = recording_send_ahead  # type: ignore[method-assign]
    try:
        orchestrator = orchestrator_of(rapp)
        start_runner()
        assert square(6).result == 36
        killed = square(8)
        orchestrator.kill(killed.invocation_id)
        orchestrator.retry(killed.invocation_id)
        assert killed.get_result(timeout=10) == 64
        orchestrator.recover_expired(3)
        rapp.state_backend.publish_info("runner", "r", {}, 5)
    finally:
        del state.conn.run
        del state.conn.send
        del state.conn.send_ahead
    keys = RedisKeys(rapp.app_id)
    scripts = load_scripts()
    assert {"register", "claim", "finish", "kill", "retry", "recover", "info", "read"} <= {name for name, _ in calls}
    for name, passed in calls:
        header = scripts[name].key_names
        assert passed == keys.keys(header), f"{name}: KEYS passed {passed} differ from its header {header}"


def test_transitions_retried_after_a_lost_reply_are_idempotent(rapp: Pynenc) -> None:
    # When Redis goes away after running a script but before its reply arrives, the client
    # sends the same call again: it must report what the first call did, not refuse.
    orchestrator = orchestrator_of(rapp)
    parent, child = spec(), spec()
    orchestrator.register([parent, child])
    [claimed] = orchestrator.claim("runner-a", 1, 30)
    assert claimed.invocation_id == parent.invocation_id
    assert orchestrator.wait("runner-a", parent.invocation_id, [child.invocation_id])
    assert orchestrator.wait("runner-a", parent.invocation_id, [child.invocation_id])
    record = orchestrator.get_record(child.invocation_id)
    assert record is not None and record.waited_by == [parent.invocation_id]
    assert orchestrator.broker.peek(1) == [(child.invocation_id, 1)]
    orchestrator.resume("runner-a", parent.invocation_id)
    orchestrator.resume("runner-a", parent.invocation_id)
    outcome = Outcome(OutcomeKind.SUCCESS, encode_json(1))
    assert orchestrator.finish("runner-a", parent.invocation_id, outcome)
    assert orchestrator.finish("runner-a", parent.invocation_id, outcome)
    assert not orchestrator.finish("runner-b", parent.invocation_id, outcome)
    record = orchestrator.get_record(parent.invocation_id)
    assert record is not None and [h.status for h in record.history].count(S.SUCCESS) == 1


def test_script_refusal_is_a_pynenc_error_and_writes_nothing(rapp: Pynenc) -> None:
    orchestrator = orchestrator_of(rapp)
    call = spec()
    orchestrator.register([call])
    orchestrator.claim("runner-a", 1, 30)
    state = rapp.state_backend
    assert isinstance(state, RedisStateBackend)
    with pytest.raises(PynencError, match="unknown outcome kind BOGUS"):
        state.run("finish", "runner-a", call.invocation_id, "BOGUS", "jnull")
    record = orchestrator.get_record(call.invocation_id)
    assert record is not None and record.status is S.RUNNING and record.owner == "runner-a"


def test_invocations_stored_by_pynenc_0_1_are_upgraded_and_run(rapp: Pynenc, start_runner: Any) -> None:
    # pynenc 0.1 kept status, owner and history in three hashes: write two invocations that
    # way (one queued, one final), then connect as a new process would.
    orchestrator = orchestrator_of(rapp)
    queued, done = square(4), square(5)
    conn, keys = orchestrator.conn, orchestrator.keys
    for invocation, status in ((queued, "REGISTERED"), (done, "SUCCESS")):
        history = conn.command("HGET", keys.state, invocation.invocation_id).split("\t")[4]
        conn.command("HSET", keys.key("status"), invocation.invocation_id, status)
        conn.command("HSET", keys.key("history"), invocation.invocation_id, history)
        conn.command("HDEL", keys.state, invocation.invocation_id)
    conn.command("ZREM", keys.queue, done.invocation_id)
    conn.command("HSET", keys.result, done.invocation_id, encode_json(25))
    assert orchestrator.get_status(queued.invocation_id) is None  # invisible until upgraded

    rapp.reset_components()  # a new process: it connects, finds the old hashes, moves them
    upgraded = orchestrator_of(rapp)
    assert upgraded.conn.command("EXISTS", keys.key("status"), keys.key("owner"), keys.key("history")) == 0
    assert upgraded.get_status(done.invocation_id) is S.SUCCESS
    record = upgraded.get_record(queued.invocation_id)
    assert record is not None and record.status is S.REGISTERED and record.owner is None
    assert [entry.status for entry in record.history] == [S.REGISTERED]
    start_runner()
    assert queued.get_result(timeout=15) == 16
    assert done.get_result(timeout=15) == 25
    assert [status for status, _ in history_of(upgraded, queued.invocation_id)] == [
        S.REGISTERED,
        S.PENDING,
        S.RUNNING,
        S.SUCCESS,
    ]
