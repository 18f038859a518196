"""Atomicity of the SQLite backend across real forked processes sharing one file."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pynenc import Pynenc
from pynenc.models import CallSpec, Outcome, OutcomeKind
from pynenc.status import InvocationStatus as S

PROCESSES = 4
PLAIN = 900
KEYED = 100
KEYS = 5


def make_app(path: Path, app_id: str = "contention") -> Pynenc:
    return Pynenc(
        app_id=app_id,
        config_values={
            "orchestrator_cls": "SQLiteOrchestrator",
            "broker_cls": "SQLiteBroker",
            "state_backend_cls": "SQLiteStateBackend",
            "sqlite_db_path": str(path),
            "logging_level": "WARNING",
        },
    )


def calls() -> list[CallSpec]:
    specs = []
    for number in range(PLAIN + KEYED):
        keyed = number >= PLAIN
        specs.append(
            CallSpec(
                invocation_id=f"inv-{number:04d}",
                task_id="tests.contention.work",
                arguments={"n": f"j{number}"},
                call_key=f"call-{number}",
                running_key=f"key-{number % KEYS}" if keyed else None,
            )
        )
    return specs


def claim_loop(path: Path, index: int, start: Any, holders: Any, overlaps: Any, out_dir: Path) -> None:
    """Child process: claim and finish until every invocation is final."""
    app = make_app(path)
    orchestrator = app.orchestrator
    runner_id = f"proc-{index}-{os.getpid()}"
    claimed_ids: list[str] = []
    start.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = orchestrator.claim(runner_id, 4, 60)
        if not batch:
            counts = orchestrator.status_counts()
            if counts.get(S.SUCCESS, 0) == PLAIN + KEYED:
                break
            orchestrator.wait_for_work(0.05)
            continue
        for item in batch:
            claimed_ids.append(item.invocation_id)
            number = int(item.invocation_id.split("-")[1])
            key = number % KEYS if number >= PLAIN else None
            if key is not None:
                with holders.get_lock():
                    holders[key] += 1
                    if holders[key] > 1:
                        overlaps.value += 1
                time.sleep(0.001)  # "work" while holding the key, so overlaps would be visible
                with holders.get_lock():
                    holders[key] -= 1
            assert orchestrator.finish(runner_id, item.invocation_id, Outcome(OutcomeKind.SUCCESS, "jnull"))
    (out_dir / f"claimed-{index}.txt").write_text("\n".join(claimed_ids))


def test_forked_processes_claim_each_invocation_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    app = make_app(path)
    outcomes = app.orchestrator.register(calls())
    assert all(outcome.created for outcome in outcomes)
    app.close()

    context = multiprocessing.get_context("fork")
    start = context.Event()
    holders = context.Array("i", KEYS)
    overlaps = context.Value("i", 0)
    children = [
        context.Process(target=claim_loop, args=(path, index, start, holders, overlaps, tmp_path))
        for index in range(PROCESSES)
    ]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(180)
    assert [child.exitcode for child in children] == [0] * PROCESSES

    claimed = Counter(
        line for index in range(PROCESSES) for line in (tmp_path / f"claimed-{index}.txt").read_text().splitlines()
    )
    assert len(claimed) == PLAIN + KEYED
    assert set(claimed.values()) == {1}, [i for i, n in claimed.items() if n > 1][:5]
    assert overlaps.value == 0
    # every process did some of the work (the file was really shared)
    assert all((tmp_path / f"claimed-{index}.txt").read_text() for index in range(PROCESSES))

    records = list(app.orchestrator.iter_records())
    assert len(records) == PLAIN + KEYED
    assert {record.status for record in records} == {S.SUCCESS}
    for record in records:
        statuses = [entry.status for entry in record.history]
        assert statuses.count(S.RUNNING) == 1, (record.invocation_id, statuses)
    keyed_history = [record.history for record in records if record.invocation_id >= f"inv-{PLAIN:04d}"]
    assert any(S.CONCURRENCY_CONTROLLED in [h.status for h in history] for history in keyed_history)
    assert app.orchestrator.queue_depth() == 0
