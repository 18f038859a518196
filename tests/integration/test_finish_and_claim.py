"""finish_and_claim on every backend: a finish and the next claim as one transition.

Memory and SQLite use the base class's composition of finish and claim; Redis runs one
script. Either way the history must read exactly as finish followed by claim would.
"""

from __future__ import annotations

from pynenc import Pynenc
from pynenc.models import Outcome, OutcomeKind
from pynenc.status import InvocationStatus as S
from tests.integration.test_redis_backend import history_of, spec

OK = Outcome(OutcomeKind.SUCCESS, "jnull")


def test_finish_and_claim_finishes_then_claims_the_next(app: Pynenc) -> None:
    first, second, third = spec(), spec(), spec()
    orchestrator = app.orchestrator
    orchestrator.register([first, second, third])
    [claimed] = orchestrator.claim("r1", 1, 30)
    assert claimed.invocation_id == first.invocation_id
    done, following = orchestrator.finish_and_claim("r1", first.invocation_id, OK, 1, 30)
    assert done
    assert [c.invocation_id for c in following] == [second.invocation_id]
    assert orchestrator.get_status(first.invocation_id) is S.SUCCESS
    assert orchestrator.get_status(second.invocation_id) is S.RUNNING
    assert orchestrator.get_status(third.invocation_id) is S.REGISTERED
    assert history_of(orchestrator, second.invocation_id) == [
        (S.REGISTERED, None),
        (S.PENDING, "r1"),
        (S.RUNNING, "r1"),
    ]


def test_finish_and_claim_with_nothing_queued_or_nothing_wanted(app: Pynenc) -> None:
    first, second = spec(), spec()
    orchestrator = app.orchestrator
    orchestrator.register([first, second])
    claimed = orchestrator.claim("r1", 2, 30)
    assert len(claimed) == 2
    assert orchestrator.finish_and_claim("r1", first.invocation_id, OK, 1, 30) == (True, [])
    assert orchestrator.finish_and_claim("r1", second.invocation_id, OK, 0, 30) == (True, [])
    assert orchestrator.status_counts() == {S.SUCCESS: 2}


def test_finish_and_claim_by_a_runner_without_the_lease_finishes_nothing(app: Pynenc) -> None:
    first, second = spec(), spec()
    orchestrator = app.orchestrator
    orchestrator.register([first, second])
    orchestrator.claim("r1", 1, 30)
    done, following = orchestrator.finish_and_claim("intruder", first.invocation_id, OK, 1, 30)
    assert not done
    assert orchestrator.get_status(first.invocation_id) is S.RUNNING
    # The claim is its own step: the intruder, a runner like any other, got the next one.
    assert [c.invocation_id for c in following] == [second.invocation_id]
