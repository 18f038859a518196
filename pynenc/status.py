"""Invocation statuses and the one table of allowed transitions.

Every backend enforces :data:`TRANSITIONS`; the Redis and SQLite backends read
their copy of it from :func:`transition_table_json` so there is a single source.

Owner rules: while an invocation is claimed (:data:`OWNED`), only the runner
that holds its lease may move it, except for the transitions the system makes
on a runner's behalf (recovery of an expired lease, an operator's kill).
"""

from __future__ import annotations

import enum
import json


class InvocationStatus(str, enum.Enum):
    REGISTERED = "REGISTERED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    RETRY = "RETRY"
    REROUTED = "REROUTED"
    CONCURRENCY_CONTROLLED = "CONCURRENCY_CONTROLLED"
    CONCURRENCY_CONTROLLED_FINAL = "CONCURRENCY_CONTROLLED_FINAL"
    KILLED = "KILLED"
    PENDING_RECOVERY = "PENDING_RECOVERY"
    RUNNING_RECOVERY = "RUNNING_RECOVERY"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def is_queued(self) -> bool:
        return self in QUEUED

    @property
    def is_owned(self) -> bool:
        return self in OWNED


S = InvocationStatus

#: Statuses an invocation never leaves on its own (an operator may retry FAILED/KILLED).
FINAL = frozenset({S.SUCCESS, S.FAILED, S.CONCURRENCY_CONTROLLED_FINAL, S.KILLED})
#: Waiting to be claimed; registration concurrency matches these ("not started yet").
QUEUED = frozenset({S.REGISTERED, S.REROUTED, S.RETRY, S.CONCURRENCY_CONTROLLED})
#: Held by a runner under a lease.
OWNED = frozenset({S.PENDING, S.RUNNING, S.PAUSED, S.RESUMED})
#: Executing code right now (count against running concurrency and slots).
EXECUTING = frozenset({S.PENDING, S.RUNNING, S.RESUMED})

#: Who may make a transition: the lease owner, the system (recovery, concurrency
#: control, cycle detection), or an operator (kill, retry).
OWNER, SYSTEM, OPERATOR = "owner", "system", "operator"

TRANSITIONS: dict[InvocationStatus, dict[InvocationStatus, str]] = {
    S.REGISTERED: {S.PENDING: SYSTEM, S.FAILED: SYSTEM, S.KILLED: OPERATOR},
    S.REROUTED: {S.PENDING: SYSTEM, S.FAILED: SYSTEM, S.KILLED: OPERATOR},
    S.RETRY: {S.PENDING: SYSTEM, S.FAILED: SYSTEM, S.KILLED: OPERATOR},
    S.CONCURRENCY_CONTROLLED: {S.REROUTED: SYSTEM, S.KILLED: OPERATOR},
    S.PENDING: {
        S.RUNNING: OWNER,
        S.CONCURRENCY_CONTROLLED: SYSTEM,
        S.CONCURRENCY_CONTROLLED_FINAL: SYSTEM,
        S.REROUTED: OWNER,
        S.PENDING_RECOVERY: SYSTEM,
        S.KILLED: OPERATOR,
    },
    S.RUNNING: {
        S.SUCCESS: OWNER,
        S.FAILED: OWNER,
        S.RETRY: OWNER,
        S.PAUSED: OWNER,
        S.REROUTED: OWNER,
        S.RUNNING_RECOVERY: SYSTEM,
        S.KILLED: OPERATOR,
    },
    S.PAUSED: {S.RESUMED: OWNER, S.REROUTED: OWNER, S.RUNNING_RECOVERY: SYSTEM, S.KILLED: OPERATOR},
    S.RESUMED: {
        S.SUCCESS: OWNER,
        S.FAILED: OWNER,
        S.RETRY: OWNER,
        S.PAUSED: OWNER,
        S.REROUTED: OWNER,
        S.RUNNING_RECOVERY: SYSTEM,
        S.KILLED: OPERATOR,
    },
    S.PENDING_RECOVERY: {S.REROUTED: SYSTEM, S.FAILED: SYSTEM},
    S.RUNNING_RECOVERY: {S.REROUTED: SYSTEM, S.FAILED: SYSTEM},
    S.SUCCESS: {},
    S.FAILED: {S.REROUTED: OPERATOR},
    S.CONCURRENCY_CONTROLLED_FINAL: {S.REROUTED: OPERATOR},
    S.KILLED: {S.REROUTED: OPERATOR},
}


def transition_rule(current: InvocationStatus, new: InvocationStatus) -> str | None:
    """Who may move ``current`` to ``new`` (OWNER/SYSTEM/OPERATOR), or None if never."""
    return TRANSITIONS[current].get(new)


def is_allowed(current: InvocationStatus, new: InvocationStatus) -> bool:
    return new in TRANSITIONS[current]


def transition_table_json() -> str:
    """The table as JSON ``{from: {to: rule}}`` for backends that check it server side."""
    return json.dumps(
        {src.value: {dst.value: rule for dst, rule in dsts.items()} for src, dsts in TRANSITIONS.items()},
        sort_keys=True,
    )
