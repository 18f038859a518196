"""``pynenc status`` and the operator commands on every backend of backends.BACKENDS.

Invocations are put in known states through the orchestrator contract itself
(register by calling tasks, claim/finish/wait as a runner would), so every
expected number is exact; one test runs a real ThreadRunner end to end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.models import CallSpec, Outcome, OutcomeKind
from pynenc.serializer.errors import encode_exception
from tests import cli_app
from tests.cli_helpers import cli, cli_json, validate
from tests.integration.backends import cli_app_on

RUNNER = "test-runner-1"


@pytest.fixture
def app(backend: str, request: pytest.FixtureRequest) -> Iterator[Pynenc]:
    with cli_app_on(backend, request, "cli") as app:
        app.conf.runner_cls = "ThreadRunner"
        yield app


def failure(message: str) -> Outcome:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return Outcome(OutcomeKind.FAILED, encode_exception(exc))


def success(app: Pynenc, value: Any) -> Outcome:
    return Outcome(OutcomeKind.SUCCESS, app.serializer.dumps(value))


def claim(app: Pynenc, count: int) -> list[str]:
    claimed = app.orchestrator.claim(RUNNER, count, 60.0)
    assert len(claimed) == count
    return [c.invocation_id for c in claimed]


# ----- overview ----------------------------------------------------------------------------
def test_overview_counts_queue_throughput_and_tasks(app: Pynenc) -> None:
    first, second, third = (cli_app.add(i, i) for i in range(3))
    failing = cli_app.fail("boom")
    assert claim(app, 2) == [first.invocation_id, second.invocation_id]
    assert app.orchestrator.finish(RUNNER, first.invocation_id, success(app, 0))
    assert app.orchestrator.finish(RUNNER, second.invocation_id, failure("bad"))

    data = cli_json("status", "status")
    assert data["app_id"] == app.app_id
    counts = data["status_counts"]
    assert (counts["REGISTERED"], counts["SUCCESS"], counts["FAILED"], data["total"]) == (2, 1, 1, 4)
    assert data["queue"]["depth"] == 2
    assert data["queue"]["oldest_waiting_id"] == third.invocation_id
    assert [row["invocation_id"] for row in data["queue"]["next"]] == [third.invocation_id, failing.invocation_id]
    assert data["throughput"]["finished"] == 2
    assert data["failed_last_hour"] == 1
    rows = {row["task_id"]: row for row in data["tasks"]}
    assert rows["tests.cli_app.add"] == {
        "task_id": "tests.cli_app.add",
        "queued": 1,
        "running": 0,
        "paused": 0,
        "succeeded": 1,
        "failed_last_hour": 1,
    }
    assert rows["tests.cli_app.fail"]["queued"] == 1
    assert rows["tests.cli_app.flaky"]["queued"] == 0  # registered in the app, never called

    text = cli("status")
    assert text.exit_code == 0, text.output
    assert app.app_id in text.output and "queue depth 2" in text.output
    assert "tests.cli_app.add" in text.output and "FAILED" in text.output


def test_watch_json_prints_one_document_per_refresh(app: Pynenc) -> None:
    cli_app.add(1, 2)
    result = cli("status", "--watch", "--json", "--count", "2", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        validate("status", json.loads(line))


def test_watch_text_repeats_the_screen(app: Pynenc) -> None:
    result = cli("status", "--watch", "--count", "2", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(f"app {app.app_id}") == 2


# ----- one invocation ----------------------------------------------------------------------
def test_invocation_history_error_and_wait_tree(app: Pynenc) -> None:
    waiter = cli_app.add(1, 2)
    failing = cli_app.fail("it broke")
    assert claim(app, 2) == [waiter.invocation_id, failing.invocation_id]
    assert app.orchestrator.finish(RUNNER, failing.invocation_id, failure("it broke"))
    awaited = cli_app.flaky("x" * 2000)
    assert app.orchestrator.wait(RUNNER, waiter.invocation_id, [awaited.invocation_id])

    data = cli_json("invocation", "status", "invocation", failing.invocation_id)
    assert data["status"] == "FAILED" and data["final"] is True
    assert [h["status"] for h in data["history"]] == ["REGISTERED", "PENDING", "RUNNING", "FAILED"]
    assert [h["runner_id"] for h in data["history"][1:]] == [RUNNER] * 3
    assert data["error"]["type"] == "builtins.ValueError"
    assert data["error"]["message"] == "it broke"
    assert "raise ValueError(message)" in data["error"]["traceback"]
    assert data["arguments"] == {"message": "'it broke'"}
    assert data["result"] is None

    paused = cli_json("invocation", "status", "invocation", waiter.invocation_id)
    assert paused["status"] == "PAUSED" and paused["owner"] == RUNNER
    assert [n["invocation_id"] for n in paused["waiting_for"]] == [awaited.invocation_id]
    assert paused["waiting_for"][0]["status"] == "REGISTERED"

    queued = cli_json("invocation", "status", "invocation", awaited.invocation_id)
    assert [n["invocation_id"] for n in queued["waited_by"]] == [waiter.invocation_id]
    assert len(queued["arguments"]["payload"]) <= 500  # long arguments are truncated

    text = cli("status", "invocation", failing.invocation_id)
    assert text.exit_code == 0, text.output
    assert "builtins.ValueError: it broke" in text.output and "Traceback" in text.output
    tree = cli("status", "invocation", waiter.invocation_id)
    assert "waits for" in tree.output and "tests.cli_app.flaky" in tree.output


def test_invocation_result_is_decoded(app: Pynenc) -> None:
    invocation = cli_app.add(20, 22)
    (claimed,) = claim(app, 1)
    assert app.orchestrator.finish(RUNNER, claimed, success(app, {"sum": 42}))
    data = cli_json("invocation", "status", "invocation", invocation.invocation_id)
    assert data["result"] == {"repr": "{'sum': 42}", "truncated": False}
    assert data["error"] is None


def test_unknown_invocation_is_not_found_never_pending(app: Pynenc) -> None:
    for args in (
        ("status", "invocation", "no-such-id"),
        ("status", "invocation", "no-such-id", "--json"),
        ("invocation", "kill", "no-such-id"),
        ("invocation", "retry", "no-such-id"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "invocation no-such-id not found" in result.stderr
        assert "PENDING" not in result.output.upper().replace("NOT FOUND", "")
        assert result.stdout == ""


# ----- tasks -------------------------------------------------------------------------------
def test_tasks_lists_options_counts_and_tasks_only_seen_in_the_backend(app: Pynenc) -> None:
    cli_app.flaky("a")
    cli_app.flaky("b")
    foreign = CallSpec(invocation_id=uuid.uuid4().hex, task_id="elsewhere.gone", arguments={}, call_key="gone")
    app.orchestrator.register([foreign])

    data = cli_json("tasks", "status", "tasks")
    rows = {row["task_id"]: row for row in data["tasks"]}
    flaky = rows["tests.cli_app.flaky"]
    assert flaky["registered"] is True and flaky["total"] == 2 and flaky["counts"]["REGISTERED"] == 2
    assert flaky["options"]["max_retries"] == 2
    assert flaky["options"]["running_concurrency"] == "TASK"
    assert flaky["options"]["retry_for"] == ["pynenc.exceptions.RetryError"]
    assert rows["elsewhere.gone"]["registered"] is False and rows["elsewhere.gone"]["options"] is None
    assert rows["tests.cli_app.add"]["total"] == 0

    text = cli("status", "tasks")
    assert text.exit_code == 0 and "elsewhere.gone: (not in this app" in text.output


# ----- runners -----------------------------------------------------------------------------
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runners_published_by_a_real_runner_and_dead_ones_flagged(app: Pynenc) -> None:
    host = socket.gethostname()
    now = time.time()
    state = app.state_backend
    state.publish_info("runner", "gone", {"runner_id": "gone", "host": host, "pid": dead_pid(), "heartbeat": now}, 60)
    stale = {"runner_id": "stale", "host": "elsewhere", "pid": 7, "heartbeat": now - 10 * app.conf.lease_seconds}
    state.publish_info("runner", "stale", stale, 60)
    slot = {"index": 0, "pid": 4242, "state": "RUNNING", "invocation_id": "inv-1", "task_id": "tests.cli_app.add"}
    slot.update({"started_at": now - 5, "heartbeat": now - 2 * app.conf.runner_timeout, "done": 3, "rss": 1 << 20})
    supervisor = {"host": "elsewhere", "pid": 99, "started_at": now - 3600, "processes": 2, "max_paused": 8}
    supervisor.update({"app": app.app_id, "slots": [slot, {"index": 1, "state": "IDLE"}]})
    state.publish_info("supervisor", "elsewhere:99", supervisor, 60)

    runner = app.runner
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while runner.runner_id not in state.list_info("runner"):  # poll with a deadline
            assert time.monotonic() < deadline, "the runner never published itself"
            time.sleep(0.02)
        data = cli_json("runners", "status", "runners")
    finally:
        runner.stop_runner_loop()
        thread.join(10)
    deadline = time.monotonic() + 10
    while runner.runner_id in state.list_info("runner"):  # a clean stop unpublishes (poll with a deadline)
        assert time.monotonic() < deadline, "a stopped runner is still listed"
        time.sleep(0.02)
    rows = {row["runner_id"]: row for row in data["runners"]}
    live = rows[runner.runner_id]
    assert live["alive"] is True and live["pid"] == os.getpid() and live["runner_cls"] == "ThreadRunner"
    assert rows["gone"]["alive"] is False and rows["gone"]["problem"] == "process gone"
    assert rows["stale"]["alive"] is False and "no heartbeat" in rows["stale"]["problem"]
    (sup,) = data["supervisors"]
    assert sup["key"] == "elsewhere:99" and sup["alive"] is True and 3590 < sup["uptime"] < 3700
    assert sup["slots"][0]["hung"] is True and sup["slots"][0]["state"] == "RUNNING"
    assert sup["slots"][1]["hung"] is False and sup["slots"][1]["running_for"] is None

    text = cli("status", "runners")
    assert text.exit_code == 0
    assert "DEAD: process gone" in text.output and "(hung?)" in text.output
    overview = cli_json("status", "status")
    assert [s["key"] for s in overview["supervisors"]] == ["elsewhere:99"]


# ----- operator actions --------------------------------------------------------------------
def test_kill_then_retry(app: Pynenc) -> None:
    invocation = cli_app.add(1, 1)
    killed = cli_json("action", "invocation", "kill", invocation.invocation_id)
    assert killed == {
        "invocation_id": invocation.invocation_id,
        "action": "kill",
        "done": True,
        "status_before": "REGISTERED",
        "status_after": "KILLED",
        "reason": None,
    }
    assert app.orchestrator.queue_depth() == 0
    again = cli_json("action", "invocation", "kill", invocation.invocation_id, expect_exit=1)
    assert again["done"] is False and "not final" in again["reason"]

    retried = cli("invocation", "retry", invocation.invocation_id)
    assert retried.exit_code == 0, retried.output
    assert "KILLED -> REROUTED" in retried.output
    assert app.orchestrator.queue_depth() == 1
    refused = cli("invocation", "retry", invocation.invocation_id)
    assert refused.exit_code == 1 and "cannot retry" in refused.stderr and "REROUTED" in refused.stderr


def test_kill_a_running_invocation(app: Pynenc) -> None:
    invocation = cli_app.add(1, 1)
    claim(app, 1)
    result = cli("invocation", "kill", invocation.invocation_id)
    assert result.exit_code == 0, result.output
    assert app.orchestrator.get_status(invocation.invocation_id).value == "KILLED"  # type: ignore[union-attr]
    assert not app.orchestrator.finish(RUNNER, invocation.invocation_id, success(app, 2))


def test_purge_needs_yes_when_not_on_a_terminal(app: Pynenc) -> None:
    cli_app.add(1, 1)
    cli_app.add(2, 2)
    refused = cli("purge")
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert sum(app.orchestrator.status_counts().values()) == 2
    data = cli_json("purge", "purge", "--yes")
    assert data == {"app_id": app.app_id, "purged": True, "invocations_removed": 2}
    assert sum(app.orchestrator.status_counts().values()) == 0
    assert cli_json("status", "status")["total"] == 0


# ----- a real runner -----------------------------------------------------------------------
def test_status_of_work_done_by_a_real_runner(app: Pynenc) -> None:
    app.conf.max_threads = 2
    runner = app.runner
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        invocations = [cli_app.add(i, 1) for i in range(5)]
        failing = cli_app.fail("real failure")
        assert [inv.result for inv in invocations] == [i + 1 for i in range(5)]
        with pytest.raises(ValueError):
            _ = failing.result
    finally:
        runner.stop_runner_loop()
        thread.join(10)
    data = cli_json("status", "status")
    assert data["status_counts"]["SUCCESS"] == 5 and data["status_counts"]["FAILED"] == 1
    assert data["throughput"]["finished"] == 6 and data["failed_last_hour"] == 1
    detail = cli_json("invocation", "status", "invocation", invocations[0].invocation_id)
    assert detail["result"]["repr"] == "1"
    assert {h["runner_id"] for h in detail["history"][1:]} == {runner.runner_id}
