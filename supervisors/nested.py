"""Running awaited invocations inside the waiting one (Redis pools): what a paused task's runner
does before it hands its slot over.

A fan-out's parent would otherwise pause, hand its permit to another process (forked for it
when none is spare) and wait to get a permit back. Instead its runner claims the awaited
invocations still queued (``wait_and_claim``, then ``claim_awaited``, one script call each)
and runs them one at a time, nested in the parent's slot: the parent keeps its permit, no
process is forked, and the step that finds nothing left resumes the parent when everything
it waits on is final. Other runners still take the awaited ones they reach first; what they
hold is waited for by pausing, as are waits with a timeout (a nested run cannot be cut
short) and waits nested more than :data:`MAX_NESTED_RUNS` deep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pynenc.runners.base import BaseRunner

from pynenc.context import Execution
from pynenc.models import ClaimedInvocation, HelpReply, Outcome, OutcomeKind

if TYPE_CHECKING:
    from pynenc.supervisors.ahead import ClaimAhead
    from pynenc.supervisors.permits import SlotWriter

#: how deep invocations run nested in waiting ones before a wait pauses instead
MAX_NESTED_RUNS = 8


class NestedRunner(BaseRunner):
    """A runner that runs what a waiting invocation waits on inside its slot (see the module)."""

    writer: SlotWriter
    ahead: ClaimAhead
    #: invocations run (for max_tasks_per_child), nested ones included
    done: int = 0
    #: how many invocations run nested in waiting ones right now
    _nested: int = 0

    def may_run_awaited(self) -> bool:
        return self._nested < MAX_NESTED_RUNS and not self.stopping.is_set() and self.room_for_nested_run()

    def room_for_nested_run(self) -> bool:
        """Whether this process may run one more invocation inside the waiting one (a pool
        runner says no when that would pass max_tasks_per_child)."""
        return True

    def run_awaited(
        self, execution: Execution, invocation_ids: Sequence[str], first: HelpReply
    ) -> tuple[dict[str, str | None], bool]:
        """Run awaited invocations still queued here, one at a time, in the waiting one's slot,
        starting with what ``first`` claimed; see the module docstring and
        :meth:`BaseRunner.run_awaited`."""
        orchestrator = self.app.orchestrator
        lease = self.app.conf.lease_seconds
        waiter = execution.invocation_id
        self.ahead.give_back()  # nothing waits behind the paused one while it helps
        ran: dict[str, str | None] = {}
        # From the last (as wait_and_claim did): other runners pop the queue from its front.
        looking = list(reversed(invocation_ids))
        finished: tuple[str, Outcome] | None = None
        shown = False  # whether the slot shows a nested invocation (not the waiting one)
        reply = first
        self._nested += 1
        try:
            while True:
                if finished is not None:
                    self._disown(finished[0])
                    if reply.done and finished[1].kind is not OutcomeKind.RETRY:
                        ran[finished[0]] = finished[1].payload if finished[1].kind is OutcomeKind.SUCCESS else None
                    finished = None
                looking = looking[reply.examined :]
                for item in reply.claimed:
                    self._own(item.invocation_id)
                if reply.resumed:
                    return ran, True  # (the finally shows the waiting one again)
                if not reply.claimed and looking and not self.stopping.is_set():
                    # Nothing claimable in that window: look at the next one.
                    reply = orchestrator.claim_awaited(self.runner_id, waiter, looking, lease)
                    continue
                if not reply.claimed or self.stopping.is_set():
                    break  # what was claimed as we stop is owned: it goes back with the rest
                child = reply.claimed[0]
                outcome = self._run_nested(child, execution, shown)
                shown = True
                if outcome is None:  # given back while stopping
                    break
                self._mark_finishing(child.invocation_id)
                finished = (child.invocation_id, outcome)
                if outcome.kind is OutcomeKind.RETRY:
                    looking.append(child.invocation_id)  # queued again: it may be ours to run again
                if not self.room_for_nested_run():
                    looking = []  # finish this one, claim nothing more
                reply = orchestrator.claim_awaited(self.runner_id, waiter, looking, lease, finished)
        finally:
            self._nested -= 1
            if shown:  # the last one run counts as done; the waiting one shows again
                self.writer.switch_running(waiter, execution.task_id)
        return ran, False

    def _run_nested(self, claimed: ClaimedInvocation, waiting: Execution, after_another: bool) -> Outcome | None:
        """Run one claimed invocation inside a waiting one; the slot shows it while it runs.

        ``after_another``: the slot shows the nested invocation run before this one, which
        now counts as done (one slot write per nested run, not two).
        """
        log = self.show_running(claimed, switching=after_another)
        log.debug("invocation started", inside=waiting.invocation_id)
        self.done += 1
        return self.run_claimed(claimed, log)

    def show_running(self, claimed: ClaimedInvocation, switching: bool) -> Any:
        """Make the slot show ``claimed`` RUNNING (``switching``: taking over from the one it
        shows, which counts as done); the logger of lines about it."""
        if switching:
            self.writer.switch_running(claimed.invocation_id, claimed.task_id)
        else:
            self.writer.set_running(claimed.invocation_id, claimed.task_id)
        return self.app.logger.bind(
            task_id=claimed.task_id, invocation_id=claimed.invocation_id, runner_id=self.runner_id
        )
