"""Single task calls on Redis are sent ahead of their replies (setting pipeline_registration).

A call returns once its registration is sent; the replies are read before the process's
next Redis command. These tests hold what users rely on: nothing sent is lost (a dropped
connection, a flushed script cache, an exit right after calling), the next thing the
process reads sees every call, and a refusal by Redis is raised, naming the invocation.
Real redis-server processes only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.exceptions import RegistrationError
from pynenc.redis_ahead import AHEAD_WINDOW
from pynenc.redis_client import RedisConnection
from pynenc.state_backend.redis_state_backend import RedisStateBackend
from pynenc.status import InvocationStatus as S
from tests.integration.test_redis_backend import app, configure, orchestrator_of, square
from tests.redis_servers import RedisServer


@pytest.fixture
def rapp(redis_url: str) -> Iterator[Pynenc]:
    configure(app, redis_url)
    yield app
    app.purge()
    app.reset_components()


def connection_of(target: Pynenc) -> RedisConnection:
    state = target.state_backend
    assert isinstance(state, RedisStateBackend)
    return state.conn


def history_statuses(target: Pynenc, invocation_id: str) -> list[S]:
    record = target.orchestrator.get_record(invocation_id)
    assert record is not None, f"invocation {invocation_id} was not registered"
    return [entry.status for entry in record.history]


def test_calls_return_before_their_replies_and_the_next_read_sees_all_in_order(rapp: Pynenc) -> None:
    conn = connection_of(rapp)
    invocations = []
    most_unread = 0
    for x in range(3 * AHEAD_WINDOW):
        invocations.append(square(x))
        most_unread = max(most_unread, len(conn.ahead.unsettled))
    assert most_unread == AHEAD_WINDOW  # replies were left unread, never more than the window
    # A read right after goes behind the calls on their connection: it sees the last one.
    assert history_statuses(rapp, invocations[-1].invocation_id) == [S.REGISTERED]
    invocations.append(square(-1))
    assert rapp.orchestrator.get_status(invocations[-1].invocation_id) is S.REGISTERED
    queued = [invocation_id for invocation_id, _ in rapp.orchestrator.broker.peek(len(invocations))]
    assert conn.ahead.unsettled == []
    assert queued == [invocation.invocation_id for invocation in invocations]  # applied in call order
    assert {history_statuses(rapp, i.invocation_id)[0] for i in invocations} == {S.REGISTERED}


def test_calls_wait_for_their_reply_when_pipelining_is_off(rapp: Pynenc) -> None:
    rapp.conf.pipeline_registration = False
    try:
        invocation = square(3)
        assert connection_of(rapp).ahead.unsettled == []
        assert history_statuses(rapp, invocation.invocation_id) == [S.REGISTERED]
    finally:
        rapp.conf.pipeline_registration = True


def test_calls_on_a_dropped_connection_are_sent_again_and_registered_once(
    rapp: Pynenc, redis_server: RedisServer
) -> None:
    admin = redis_server.client()
    try:
        # Redis holds the calls unprocessed (writes paused), then drops the connection that
        # carries them: their replies never come and the commands were never applied.
        admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        try:
            invocations = [square(x) for x in range(10)]
            conn = connection_of(rapp)
            assert len(conn.ahead.unsettled) == 10
            host, port = conn.ahead.wire._sock.getsockname()[:2]
            assert admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}") in (True, b"OK", "OK")
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        for invocation in invocations:
            assert history_statuses(rapp, invocation.invocation_id) == [S.REGISTERED]
        assert rapp.orchestrator.broker.depth() == 10  # queued once each
    finally:
        admin.close()


def test_calls_sent_after_the_script_cache_was_flushed_are_applied(rapp: Pynenc, redis_server: RedisServer) -> None:
    admin = redis_server.client()
    try:
        square(1).status  # connected, scripts loaded
        admin.script_flush()
        admin.function_flush()
        invocations = [square(x) for x in range(5)]  # each reply says the function is not loaded
        for invocation in invocations:
            assert history_statuses(rapp, invocation.invocation_id) == [S.REGISTERED]
    finally:
        admin.close()


def double(x: int) -> int:
    return 2 * x


def test_a_refused_registration_raises_at_the_next_command_naming_the_invocation(
    fresh_redis_server: RedisServer,
) -> None:
    target = configure(Pynenc(app_id="refused"), fresh_redis_server.url)
    task = target.task(double)
    admin = fresh_redis_server.client()
    try:
        orchestrator = orchestrator_of(target)
        first = task(1).invocation_id
        assert orchestrator.get_status(first) is S.REGISTERED
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        refused = task(2).invocation_id  # sent; Redis answers OOM
        with pytest.raises(RegistrationError, match=rf"registration of invocation {refused} of \S+double.*maxmemory"):
            orchestrator.get_status(first)
        admin.config_set("maxmemory", 0)
        assert orchestrator.get_status(refused) is None  # nothing of it stored
        assert orchestrator.get_status(first) is S.REGISTERED  # what was accepted stays
        assert orchestrator.get_status(task(3).invocation_id) is S.REGISTERED
    finally:
        admin.close()
        target.close()


def test_a_forked_child_leaves_the_parents_unread_replies_to_the_parent(rapp: Pynenc) -> None:
    parent_calls = [square(x) for x in range(5)]
    conn = connection_of(rapp)
    assert len(conn.ahead.unsettled) == 5
    pid = os.fork()
    if pid == 0:  # the child: its own call, its own reads; the parent's sockets untouched
        code = 1
        try:
            inherited = list(conn.ahead.unsettled)  # must be none: reading them would send them again
            child_call = square(100)
            own = len(conn.ahead.unsettled)
            if not inherited and own == 1 and history_statuses(rapp, child_call.invocation_id) == [S.REGISTERED]:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(conn.ahead.unsettled) == 5  # still ours to read
    for invocation in parent_calls:
        assert history_statuses(rapp, invocation.invocation_id) == [S.REGISTERED]


def test_a_process_exiting_right_after_its_calls_has_every_call_registered(rapp: Pynenc, redis_url: str) -> None:
    script = textwrap.dedent(
        f"""
        from tests.integration.test_redis_backend import app, configure, square
        configure(app, {redis_url!r})
        app.conf.app_id = {rapp.app_id!r}
        for x in range(300):
            print(square(x).invocation_id)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 300
    statuses: list[Any] = [rapp.orchestrator.get_status(invocation_id) for invocation_id in ids]
    assert statuses == [S.REGISTERED] * 300
