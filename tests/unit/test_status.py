"""The transition table and its enforcement."""

from __future__ import annotations

import json

import pytest

from pynenc import Pynenc
from pynenc.exceptions import InvocationStatusTransitionError
from pynenc.status import FINAL, OPERATOR, TRANSITIONS, InvocationStatus, is_allowed, transition_table_json

S = InvocationStatus
PUBLISHED_NAMES = {
    "REGISTERED", "PENDING", "RUNNING", "PAUSED", "RESUMED", "SUCCESS", "FAILED", "RETRY", "REROUTED",
    "CONCURRENCY_CONTROLLED", "CONCURRENCY_CONTROLLED_FINAL", "KILLED", "PENDING_RECOVERY", "RUNNING_RECOVERY",
}  # fmt: skip


def test_every_published_status_exists_and_has_a_row() -> None:
    assert {status.value for status in S} == PUBLISHED_NAMES
    assert set(TRANSITIONS) == set(S)


def test_final_statuses_only_leave_by_operator_action() -> None:
    assert {S.SUCCESS, S.FAILED, S.CONCURRENCY_CONTROLLED_FINAL} <= FINAL
    for status in FINAL:
        assert all(rule == OPERATOR for rule in TRANSITIONS[status].values())
    assert TRANSITIONS[S.SUCCESS] == {}


def test_every_status_is_reachable_from_registered() -> None:
    seen, frontier = {S.REGISTERED}, [S.REGISTERED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(S)


def test_json_copy_for_server_side_checks_matches() -> None:
    table = json.loads(transition_table_json())
    for src, dsts in TRANSITIONS.items():
        assert set(table[src.value]) == {dst.value for dst in dsts}


def test_illegal_transition_raises_on_the_memory_backend() -> None:
    app = Pynenc(app_id="status-unit")

    @app.task
    def job() -> int:
        return 1

    invocation = job()
    orchestrator = app.orchestrator
    record = app.state_backend.get_record(invocation.invocation_id)
    assert record is not None and not is_allowed(S.REGISTERED, S.SUCCESS)
    stored = orchestrator.state.records[invocation.invocation_id]  # type: ignore[attr-defined]
    with pytest.raises(InvocationStatusTransitionError, match="cannot move from REGISTERED to SUCCESS"):
        with orchestrator.lock:  # type: ignore[attr-defined]
            orchestrator._move(stored, S.SUCCESS)  # type: ignore[attr-defined]
    assert orchestrator.get_status(invocation.invocation_id) is S.REGISTERED
