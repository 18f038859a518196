"""Plain data passed between the app and its components.

These are the nouns of the component contracts: what a call looks like when it
is registered, what a runner receives when it claims work, how an outcome is
reported and what a stored invocation looks like when read back.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from pynenc.status import InvocationStatus

# The records made once or more per invocation (CallSpec, RegisterOutcome, ClaimedInvocation,
# FinishReply, HelpReply, Outcome) are plain slotted dataclasses, not frozen ones: a frozen
# dataclass sets each field through object.__setattr__, which doubled their cost on the hot
# paths. Nothing changes them after creation.


def new_invocation_id() -> str:
    """A random version-4 UUID as 32 hex digits, like ``uuid.uuid4().hex`` at a third of its
    cost (it runs once per call of a task; building a ``uuid.UUID`` object took most of it)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


@dataclass(slots=True)
class CallSpec:
    """One call of a task, serialized and ready to register.

    ``call_key`` identifies the call (task + every argument); it drives cycle
    detection and ARGUMENTS concurrency. ``registration_key`` and ``running_key``
    are None when that concurrency control is disabled for the task.
    """

    invocation_id: str
    task_id: str
    arguments: dict[str, str]
    call_key: str
    registration_key: str | None = None
    running_key: str | None = None
    reroute_on_concurrency_control: bool = True
    on_diff_non_key_args_raise: bool = False
    parent_invocation_id: str | None = None


@dataclass(slots=True)
class RegisterOutcome:
    """What happened to one :class:`CallSpec` at registration."""

    invocation_id: str
    created: bool
    #: Set when registration was refused (e.g. different non-key arguments).
    error: str | None = None


@dataclass(slots=True)
class ClaimedInvocation:
    """An invocation a runner now owns, with its lease: RUNNING, or PENDING when claimed ahead."""

    invocation_id: str
    task_id: str
    arguments: dict[str, str]
    num_retries: int
    lease_expires_at: float


@dataclass(slots=True)
class FinishReply:
    """What ``finish_start_claim`` did: finished, started the invocation held ahead, claimed."""

    done: bool
    started: bool
    claimed: list[ClaimedInvocation]


@dataclass(slots=True)
class HelpReply:
    """What ``claim_awaited`` did for the runner of a paused waiter."""

    #: the invocation given to finish was finished (True when none was given)
    done: bool
    #: how many of the awaited ids given were looked at
    examined: int
    #: the awaited invocation claimed to run now (at most one)
    claimed: list[ClaimedInvocation]
    #: nothing was claimed and everything the waiter waits on was final: it is RESUMED
    resumed: bool


class OutcomeKind(str, enum.Enum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    RETRY = "RETRY"


@dataclass(slots=True)
class Outcome:
    """How a run ended: the serialized result, or the serialized error."""

    kind: OutcomeKind
    payload: str

    @property
    def status(self) -> InvocationStatus:
        return InvocationStatus(self.kind.value)


@dataclass(frozen=True)
class HistoryEntry:
    status: InvocationStatus
    timestamp: float
    runner_id: str | None = None


@dataclass
class InvocationRecord:
    """Everything stored about one invocation, as read back from a backend."""

    invocation_id: str
    task_id: str
    arguments: dict[str, str]
    status: InvocationStatus
    call_key: str = ""
    num_retries: int = 0
    stalls: int = 0
    owner: str | None = None
    parent_invocation_id: str | None = None
    created_at: float = 0.0
    result: str | None = None
    error: str | None = None
    waiting_for: list[str] = field(default_factory=list)
    waited_by: list[str] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
