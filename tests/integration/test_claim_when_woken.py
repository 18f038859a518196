"""claim_when_woken on every backend: an idle runner's wait for work and its claim.

Memory and SQLite wait, then claim (the base class's composition); Redis sends BLPOP and
the claim script in one write, so the claim runs the moment a wake marker arrives. Either
way: what is registered while the runner waits is claimed by that call, RUNNING and owned,
and a wait that nothing ends returns empty-handed at its timeout.
"""

from __future__ import annotations

import threading
import time

from pynenc import Pynenc
from pynenc.models import ClaimedInvocation
from pynenc.status import InvocationStatus as S
from tests.integration.test_redis_backend import history_of, spec


def _wait_in_thread(app: Pynenc, timeout: float) -> tuple[threading.Thread, list[list[ClaimedInvocation]]]:
    found: list[list[ClaimedInvocation]] = []

    def wait() -> None:
        found.append(app.orchestrator.claim_when_woken("r1", 1, 30, timeout))

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, found


def test_what_is_registered_while_a_runner_waits_is_claimed_by_its_wait(app: Pynenc) -> None:
    orchestrator = app.orchestrator
    orchestrator.queue_depth()  # components built before the wait starts
    thread, found = _wait_in_thread(app, timeout=20.0)
    call = spec()
    orchestrator.register([call])
    thread.join(15.0)  # far below the wait's own timeout: the registration ended it
    assert not thread.is_alive(), "the wait did not end when work was registered"
    [claimed] = found[0]
    assert claimed.invocation_id == call.invocation_id
    assert claimed.task_id == call.task_id and claimed.arguments == call.arguments
    assert orchestrator.get_status(call.invocation_id) is S.RUNNING
    assert history_of(orchestrator, call.invocation_id) == [
        (S.REGISTERED, None),
        (S.PENDING, "r1"),
        (S.RUNNING, "r1"),
    ]


def test_a_wait_that_nothing_ends_returns_empty_handed_at_its_timeout(app: Pynenc) -> None:
    started = time.monotonic()
    assert app.orchestrator.claim_when_woken("r1", 1, 30, 0.3) == []
    assert time.monotonic() - started >= 0.25  # it did wait
    assert app.orchestrator.status_counts() == {}


def test_work_queued_before_the_wait_is_claimed_at_once(app: Pynenc) -> None:
    first, second = spec(), spec()
    app.orchestrator.register([first, second])
    claimed = app.orchestrator.claim_when_woken("r1", 2, 30, 20.0)
    assert [c.invocation_id for c in claimed] == [first.invocation_id, second.invocation_id]
    assert app.orchestrator.status_counts() == {S.RUNNING: 2}
