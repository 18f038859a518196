"""Claiming ahead: how a busy pool runner keeps the backend's round trip off its critical path.

Without it a runner works in lockstep: run an invocation, send its finish (which claims
the next one), wait for the reply, run the next. With short tasks the wait for that reply
is a large part of each invocation's time.

With it, after a short task the finish also claims the *following* invocation, which stays
PENDING (owned and leased, not started). At the next finish the runner sends one script
call that finishes the invocation that ran, starts the one held ahead (PENDING -> RUNNING)
and claims another ahead, and runs the started one at once; the reply is read after that
run, before the next finish. One invocation at a time still executes per runner: claiming
ahead changes when a finish is confirmed, never how many invocations run.

What keeps it honest:

- only after a task that took at most :data:`AHEAD_AFTER_SECONDS` (short tasks, where the
  round trip matters) is anything claimed ahead;
- what is held ahead is given back to the queue (front of its priority, no stall counted)
  when the running invocation takes longer than :data:`HOLD_SECONDS`, when it pauses to
  wait on others, and when the runner stops, retires or recycles; then nothing is claimed
  ahead for :data:`COOLDOWN_SECONDS`;
- the reply in flight is read before any other transition of the started invocation
  (``settle``), and before anything held is given back.

Only orchestrators with ``claims_ahead`` (Redis) are used this way; with the others the
runner finishes and claims in one synchronous call, as :class:`BaseRunner` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynenc.models import ClaimedInvocation, FinishReply, Outcome

if TYPE_CHECKING:
    from pynenc.runners.base import BaseRunner

#: claim ahead only after a task that took at most this long
AHEAD_AFTER_SECONDS = 0.02
#: give back what is held ahead when the running invocation has run this long
HOLD_SECONDS = 0.05
#: after giving something back, claim nothing ahead for this long (tasks that pause or run
#: long would otherwise make every held invocation a wasted claim and release)
COOLDOWN_SECONDS = 0.2


class ClaimAhead:
    """The invocations a runner holds ahead and the finish reply it has not read yet."""

    def __init__(self, runner: BaseRunner, stopping: threading.Event) -> None:
        self.runner = runner
        self.stopping = stopping
        self.cond = threading.Condition()
        self.held: list[ClaimedInvocation] = []
        self.reply: Callable[[], FinishReply] | None = None
        self.reply_for: str | None = None
        #: monotonic start of the invocation running now (None between invocations)
        self.running_since: float | None = None
        #: no claiming ahead before this monotonic time (set when something was given back)
        self.cooldown_until = 0.0
        #: the watchdog sleeps until told (nothing was held): only then is it notified
        self._watchdog_idle = False
        self._watchdog = threading.Thread(target=self._watch, name="pynenc-claim-ahead", daemon=True)
        self._watchdog.start()

    # ----- the runner's thread -----------------------------------------------------------
    def finish(
        self, claimed: ClaimedInvocation, outcome: Outcome, claim_next: int, seconds: float, log: Any
    ) -> list[ClaimedInvocation]:
        """Report how ``claimed`` ended; return the invocation to run next, if any (owned and,
        when it was held ahead, started by the same call)."""
        runner = self.runner
        orchestrator = runner.app.orchestrator
        lease = runner.app.conf.lease_seconds
        runner._mark_finishing(claimed.invocation_id)
        ahead = (
            claim_next > 0
            and orchestrator.claims_ahead
            and seconds <= AHEAD_AFTER_SECONDS
            and time.monotonic() >= self.cooldown_until
        )
        with self.cond:
            self.settle_locked()
            if claim_next <= 0:
                self.give_back_locked()  # this runner stops, recycles or lets a paused one resume
            elif self.held:
                following = self.held.pop(0)
                self.reply = orchestrator.finish_start_claim(
                    runner.runner_id, claimed.invocation_id, outcome, following.invocation_id, int(ahead), 0, lease
                )
                self.reply_for = claimed.invocation_id
                runner._disown(claimed.invocation_id)
                self.running_since = time.monotonic()  # it runs as soon as this returns
                self._wake_watchdog()
                return [following]
            if ahead:  # claim one to run now and one to hold
                reply = orchestrator.finish_start_claim(
                    runner.runner_id, claimed.invocation_id, outcome, None, 2, 1, lease
                )()
            else:
                done, claimed_now = orchestrator.finish_and_claim(
                    runner.runner_id, claimed.invocation_id, outcome, max(claim_next, 0), lease
                )
                reply = FinishReply(done, False, claimed_now)
            if not reply.done:
                log.warning("finish rejected: this runner no longer holds the lease", outcome=outcome.kind.value)
            for item in reply.claimed:
                runner._own(item.invocation_id)
            runner._disown(claimed.invocation_id)
            self.held.extend(reply.claimed[1:])
            self._wake_watchdog()
            return reply.claimed[:1]

    def _wake_watchdog(self) -> None:
        # Only when it has something to watch (a held invocation, a reply in flight), and only
        # when it sleeps: waking a thread for every invocation would cost more than the round
        # trip saved, and on a busy machine delays the very process the result goes to.
        if self._watchdog_idle and (self.held or self.reply is not None):
            self.cond.notify_all()

    def settle(self) -> None:
        with self.cond:
            self.settle_locked()

    def give_back(self) -> None:
        """Read the reply in flight and return everything held ahead to the queue."""
        with self.cond:
            self.settle_locked()
            self.give_back_locked()

    # ----- with the lock held ------------------------------------------------------------
    def settle_locked(self) -> None:
        if self.reply is None:
            return
        read, self.reply = self.reply, None
        finished, self.reply_for = self.reply_for, None
        log = self.runner.app.logger
        try:
            reply = read()
        except Exception as exc:  # what it claimed stays PENDING until its lease expires, then requeued
            log.error("finish reply lost", invocation_id=finished, error=repr(exc), runner_id=self.runner.runner_id)
            return
        if not reply.done:
            log.warning("finish rejected: this runner no longer holds the lease", invocation_id=finished)
        if not reply.started:
            log.info("an invocation held ahead was started after it was taken away", runner_id=self.runner.runner_id)
        for item in reply.claimed:
            self.runner._own(item.invocation_id)
        self.held.extend(reply.claimed)

    def give_back_locked(self) -> None:
        if not self.held:
            return
        ids = [item.invocation_id for item in self.held]
        self.held = []
        self.cooldown_until = time.monotonic() + COOLDOWN_SECONDS
        # Not given back: still PENDING, recovered when the lease expires, no stall counted.
        self.runner.give_back(ids, "invocations held ahead")

    # ----- the watchdog thread -------------------------------------------------------------
    def _watch(self) -> None:
        with self.cond:
            while not self.stopping.is_set():
                since = self.running_since
                if since is None or not (self.held or self.reply is not None):
                    self._watchdog_idle = True
                    self.cond.wait(1.0)
                    self._watchdog_idle = False
                    continue
                ran = time.monotonic() - since
                if ran < HOLD_SECONDS:
                    self.cond.wait(HOLD_SECONDS - ran)
                    continue
                try:
                    self.settle_locked()
                    self.give_back_locked()
                except Exception as exc:  # never let the watchdog die
                    self.runner.app.logger.warning("claim-ahead watchdog", error=repr(exc))
                    self.cond.wait(1.0)
