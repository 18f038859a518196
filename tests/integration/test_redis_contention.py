"""Atomicity under contention: many claimers on one Redis queue.

The claimers are threads with their own runner ids calling the orchestrator
directly (each call is one script on its own pooled connection, so the
scripts really race inside Redis).
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pynenc import Pynenc
from pynenc.models import CallSpec, Outcome, OutcomeKind
from pynenc.serializer.base import encode_json
from pynenc.status import InvocationStatus as S
from tests.integration.test_redis_backend import configure, orchestrator_of, spec

TASK = "tests.integration.test_redis_backend.square"


@pytest.fixture
def capp(redis_url: str) -> Iterator[Pynenc]:
    target = configure(Pynenc(app_id="contention"), redis_url)
    yield target
    target.purge()
    target.close()


def run_claimers(target: Pynenc, count: int, work: Any, batch: int = 1) -> None:
    """``count`` threads claim and finish until the queue stays empty; ``work(claimed)`` runs in between."""
    orchestrator = orchestrator_of(target)
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def claimer(number: int) -> None:
        runner_id = f"claimer-{number}"
        try:
            start.wait(10)
            idle_rounds = 0
            while idle_rounds < 3:
                claimed = orchestrator.claim(runner_id, batch, 60)
                if not claimed:
                    idle_rounds += 1
                    orchestrator.wait_for_work(0.05)
                    continue
                idle_rounds = 0
                for item in claimed:
                    work(runner_id, item)
                    assert orchestrator.finish(runner_id, item.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    assert errors == []


def test_eight_claimers_run_each_of_2000_invocations_exactly_once(capp: Pynenc) -> None:
    orchestrator = orchestrator_of(capp)
    calls = [spec(TASK, arguments={"x": encode_json(i)}) for i in range(2000)]
    outcomes = orchestrator.register(calls)
    assert all(o.created for o in outcomes)
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def work(runner_id: str, claimed: Any) -> None:
        with lock:
            runs[claimed.invocation_id] += 1

    run_claimers(capp, 8, work, batch=3)
    assert len(runs) == 2000 and set(runs.values()) == {1}
    assert orchestrator.status_counts() == {S.SUCCESS: 2000}
    assert orchestrator.queue_depth() == 0


def test_running_concurrency_keys_never_overlap_with_four_claimers(capp: Pynenc) -> None:
    orchestrator = orchestrator_of(capp)
    keys = {}
    calls = []
    for i in range(160):
        key = f"k{i % 4}"
        call = CallSpec(
            f"inv-{i:04d}-{key}", TASK, {"x": encode_json(i)}, call_key=f"c{i}", running_key=key,
            reroute_on_concurrency_control=True,
        )  # fmt: skip
        keys[call.invocation_id] = key
        calls.append(call)
    orchestrator.register(calls)
    spans: list[tuple[str, float, float, str]] = []
    lock = threading.Lock()

    def work(runner_id: str, claimed: Any) -> None:
        begin = time.monotonic()
        time.sleep(random.uniform(0, 0.002))  # simulated work: lets other claimers race for the key
        end = time.monotonic()
        with lock:
            spans.append((keys[claimed.invocation_id], begin, end, runner_id))

    run_claimers(capp, 4, work, batch=2)
    assert orchestrator.status_counts() == {S.SUCCESS: 160}
    assert len(spans) == 160
    for key in {"k0", "k1", "k2", "k3"}:
        ordered = sorted((begin, end) for k, begin, end, _ in spans if k == key)
        assert len(ordered) == 40
        overlaps = [(a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1]]
        assert overlaps == [], f"two invocations with running key {key} ran at the same time"
    rerouted = [r for r in orchestrator.iter_records() if S.CONCURRENCY_CONTROLLED in [h.status for h in r.history]]
    assert rerouted, "the claimers never raced for a key: the test did not exercise concurrency control"
    assert len({runner for *_, runner in spans}) > 1


def _claim_in_child(target: Pynenc, number: int, out: Any) -> None:
    """Runs in a forked process: the parent's connection must not be reused here."""
    orchestrator = orchestrator_of(target)
    mine = []
    idle_rounds = 0
    while idle_rounds < 3:
        claimed = orchestrator.claim(f"proc-{number}", 4, 60)
        if not claimed:
            idle_rounds += 1
            orchestrator.wait_for_work(0.05)
            continue
        idle_rounds = 0
        for item in claimed:
            mine.append(item.invocation_id)
            orchestrator.finish(f"proc-{number}", item.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
    out.put(mine)


def test_forked_processes_claim_through_their_own_connections(capp: Pynenc) -> None:
    orchestrator = orchestrator_of(capp)
    calls = [spec(TASK, arguments={"x": encode_json(i)}) for i in range(400)]
    orchestrator.register(calls)
    assert orchestrator.queue_depth() == 400  # the parent's connection is live before the fork
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    children = [context.Process(target=_claim_in_child, args=(capp, i, out)) for i in range(4)]
    for child in children:
        child.start()
    claimed = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    everything = [i for part in claimed for i in part]
    assert sorted(everything) == sorted(c.invocation_id for c in calls)
    assert orchestrator.status_counts() == {S.SUCCESS: 400}
