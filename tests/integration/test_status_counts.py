"""The counting reads behind ``pynenc status`` agree with a scan of every record.

SQLite answers them with SQL and Redis with counters the scripts keep (``counts``,
``failed_at``, ``final_at``); the contract's defaults read every record. After a workload
that goes through every kind of transition (claims, finishes of each outcome, a wait that
raises a priority, a kill, an operator retry, a lease recovery, an expiry), each backend's
answer must equal the scan's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.models import Outcome, OutcomeKind
from pynenc.orchestrator.base import BaseOrchestrator
from pynenc.serializer.errors import encode_exception
from pynenc.status import InvocationStatus
from tests import cli_app
from tests.integration.backends import cli_app_on
from tests.integration.test_cli_status import failure

S = InvocationStatus
RUNNER = "counting-runner"


@pytest.fixture
def app(backend: str, request: pytest.FixtureRequest) -> Iterator[Pynenc]:
    with cli_app_on(backend, request, "counts") as app:
        yield app


def scanned(orchestrator: BaseOrchestrator, now: float) -> dict[str, Any]:
    """The contract's defaults: every record read."""
    return {
        "by_task": BaseOrchestrator.task_status_counts(orchestrator),
        "final": BaseOrchestrator.final_count_since(orchestrator, now - 60),
        "failed": BaseOrchestrator.failed_since(orchestrator, now - 3600),
        "oldest": getattr(BaseOrchestrator.oldest_queued(orchestrator), "invocation_id", None),
    }


def answered(orchestrator: BaseOrchestrator, now: float) -> dict[str, Any]:
    """The backend's own answers."""
    return {
        "by_task": orchestrator.task_status_counts(),
        "final": orchestrator.final_count_since(now - 60),
        "failed": orchestrator.failed_since(now - 3600),
        "oldest": getattr(orchestrator.oldest_queued(), "invocation_id", None),
    }


def workload(app: Pynenc) -> None:
    """Invocations of three tasks in every kind of status, 37 in all."""
    orch = app.orchestrator
    adds = [cli_app.add(i, i) for i in range(30)]
    fails = [cli_app.fail(f"f{i}") for i in range(4)]
    cli_app.flaky("x")
    claimed = [c.invocation_id for c in orch.claim(RUNNER, 8, 60.0)]
    assert claimed == [a.invocation_id for a in adds[:8]]
    ok = Outcome(OutcomeKind.SUCCESS, app.serializer.dumps(1))
    assert orch.finish(RUNNER, claimed[0], ok)
    assert orch.finish(RUNNER, claimed[1], failure("one"))
    assert orch.finish(RUNNER, claimed[2], Outcome(OutcomeKind.RETRY, encode_exception(ValueError("again"))))
    # a waiter pauses on the last add: the awaited one gains priority (a band of its own)
    assert orch.wait(RUNNER, claimed[3], [adds[-1].invocation_id])
    assert orch.kill(claimed[4])
    assert orch.kill(fails[0].invocation_id)  # killed while queued
    # a finish-and-claim and a claim ahead (PENDING) where the backend has them
    done, following = orch.finish_and_claim(RUNNER, claimed[5], ok, 1, 60.0)
    assert done and len(following) == 1
    assert orch.finish(RUNNER, claimed[6], failure("two"))
    assert orch.retry(claimed[6])  # FAILED -> REROUTED by an operator
    orch.release(RUNNER, [claimed[7]])  # given back
    # a lease that expires: recovered to the queue
    lost = orch.claim("lost-runner", 1, 0.05)
    assert len(lost) == 1
    deadline = time.monotonic() + 10
    while not orch.recover_expired(3):
        assert time.monotonic() < deadline, "the expired lease was never recovered"
        time.sleep(0.05)
    # one claim across the three tasks: a call that changes more than two counts at once
    wide = orch.claim("wide-runner", 40, 60.0)
    assert {c.task_id for c in wide} == {"tests.cli_app.add", "tests.cli_app.fail", "tests.cli_app.flaky"}
    cli_app.add(100, 100)  # something queued after it
    cli_app.fail("late")


def test_counting_reads_agree_with_a_scan_after_every_kind_of_transition(app: Pynenc) -> None:
    workload(app)
    now = time.time()
    expected = scanned(app.orchestrator, now)
    assert answered(app.orchestrator, now) == expected
    by_task = expected["by_task"]
    assert by_task["tests.cli_app.add"][S.SUCCESS] == 2
    assert by_task["tests.cli_app.add"][S.PAUSED] == 1
    assert by_task["tests.cli_app.fail"][S.KILLED] == 1
    assert expected["failed"] == {"tests.cli_app.add": 1}
    assert expected["oldest"] is not None
    total = sum(sum(per_status.values()) for per_status in by_task.values())
    assert total == 37
    assert sum(app.orchestrator.status_counts().values()) == 37


# (the memory backend keeps every invocation until purge: it has no result_ttl)
@pytest.mark.parametrize("backend", ["sqlite", "redis", "redis6"])
def test_counts_follow_the_expiry_of_final_invocations(app: Pynenc) -> None:
    family = app.orchestrator.family
    workload(app)
    app.conf.result_ttl = 0.0
    time.sleep(0.01)  # strictly after the last final move
    if family == "redis":
        assert app.orchestrator.expire_results() > 0  # type: ignore[attr-defined]
    else:
        app.orchestrator.recover_expired(3)  # SQLite sweeps expired results with the leases
    now = time.time()
    expected = scanned(app.orchestrator, now)
    assert answered(app.orchestrator, now) == expected
    left = {status for per_status in expected["by_task"].values() for status in per_status}
    assert left, "nothing left: the workload's queued and paused invocations must stay"
    assert not left & {S.SUCCESS, S.FAILED, S.KILLED}, "the expiry left final invocations"


@pytest.mark.parametrize("backend", ["redis", "redis6"])
def test_redis_records_older_than_the_counts_are_counted_by_scanning(app: Pynenc) -> None:
    orch: Any = app.orchestrator
    workload(app)
    orch.conn.call(lambda client: client.delete(orch.keys.counts))  # records from before the counters
    assert orch.census.counters() is None
    now = time.time()
    assert answered(orch, now) == scanned(orch, now)
    cli_app.add(1, 2)  # registering beside records the counts never saw: still not trusted
    assert orch.census.counters() is None
    app.purge()
    cli_app.add(1, 2)  # nothing stored: counting starts, from zero
    assert orch.census.counters() == {"tests.cli_app.add": {S.REGISTERED: 1}}
