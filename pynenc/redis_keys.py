"""The Redis key schema of pynenc, in one place.

Every key of an app is ``pynenc:{<app_id>}:<name>``. The ``{<app_id>}`` hash
tag makes every key of one app hash to the same Redis Cluster slot, so each
Lua script may touch all of them; two apps never share a key. Per-invocation
data lives in app-wide hashes whose fields are invocation ids (there is no key
per invocation), so the set of keys is fixed and known: every script receives
all keys it touches in ``KEYS`` and builds no key name itself, and ``purge``
deletes exactly :meth:`RedisKeys.all_keys`.

=============  ======  ==========================================================
name           type    content
=============  ======  ==========================================================
spec           hash    id -> JSON ``{"task_id", "arguments", "call_key",
                       "parent", "created_at"}`` (immutable after register)
ctl            hash    id -> JSON ``{"ck": call key, "rk": registration key,
                       "nk": running key, "rr": reroute on concurrency control,
                       "p": parent id, "t": task id}`` (what the scripts decide
                       and count with)
state          hash    id -> ``"<status>\\t<owner>\\t<task>\\t<keyed>\\t<history>"``:
                       the status name (:class:`pynenc.status.InvocationStatus`), the
                       runner id holding the lease ('' unless the status is owned), the
                       task id, "1" when ctl has a registration or running key (else ''),
                       and the history, a JSON array of ``{"s": status, "t": "time",
                       "r": runner}``. One field, so each transition is one read and one
                       write, and a plain invocation's transitions never read ctl
retries        hash    id -> number of retries so far
stalls         hash    id -> times its runner died or hung
result         hash    id -> serialized result
error          hash    id -> serialized error (:func:`encode_exception`)
waiting_for    hash    id -> JSON array of ids it waits for
waited_by      hash    id -> JSON array of ids waiting for it
priority       hash    id -> number of waiters gained (its queue priority)
queue          zset    queued ids; score ``-priority * 2**32 + order`` (lowest first)
seq            string  counter for "back of the queue" order
fseq           string  counter for "front of the queue" order
reg_index      hash    registration key -> id of the queued invocation holding it
running_keys   hash    running key -> id of the invocation holding it
parked         hash    running key -> JSON array of CONCURRENCY_CONTROLLED ids
leases         zset    owned ids; score = lease expiry (unix time)
final_at       zset    final ids; score = when they became final (for result_ttl)
failed_at      zset    ids that ended FAILED; score = when (failures in the last hour)
counts         hash    "<status>\\t<task id>" -> stored invocations of that task in that
                       status; "~valid" -> when counting began (present only when the
                       counts cover every stored invocation)
wake           list    markers pushed on every enqueue; idle runners BLPOP it
info           hash    "<kind>\\x00<key>" -> JSON published by runners/supervisors
info_exp       zset    "<kind>\\x00<key>" -> expiry of that info entry
=============  ======  ==========================================================

Channel (not a key, no slot): ``pynenc:{<app_id>}:final`` receives the id of
every invocation that becomes final (PUBLISH from the scripts); each process
has one subscriber thread that wakes its result waiters.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Hashes keyed by invocation id: the expiry sweep deletes an id's field from each.
PER_INVOCATION_HASHES: tuple[str, ...] = (
    "spec",
    "ctl",
    "state",
    "retries",
    "stalls",
    "result",
    "error",
    "waiting_for",
    "waited_by",
    "priority",
)

#: Names of every key of an app, in a fixed order: the per-invocation hashes, then the rest.
KEY_NAMES: tuple[str, ...] = PER_INVOCATION_HASHES + (
    "queue",
    "seq",
    "fseq",
    "reg_index",
    "running_keys",
    "parked",
    "leases",
    "final_at",
    "failed_at",
    "counts",
    "wake",
    "info",
    "info_exp",
)

#: Keys of pynenc 0.1 that later versions no longer write: an invocation's status, owner and
#: history, now one field of ``state``. An app still holding them is upgraded when a process
#: of a newer pynenc first connects (the ``upgrade`` script); ``purge`` deletes them too.
LEGACY_KEY_NAMES: tuple[str, ...] = ("status", "owner", "history")

#: Longest the wake-marker list may grow (LTRIM after each push).
WAKE_LIST_CAP = 64

#: One priority point in queue scores; orders stay below 2**31 so scores stay exact (< 2**53).
PRIORITY_UNIT = 2**32
ORDER_BASE = 2**31


def prefix(app_id: str) -> str:
    return f"pynenc:{{{app_id}}}:"


@dataclass(frozen=True)
class RedisKeys:
    """The key names of one app."""

    app_id: str

    def key(self, name: str) -> str:
        if name not in KEY_NAMES and name not in LEGACY_KEY_NAMES:
            raise KeyError(f"unknown pynenc redis key {name!r}")
        return prefix(self.app_id) + name

    def __getattr__(self, name: str) -> str:
        if name in KEY_NAMES or name in LEGACY_KEY_NAMES:
            return prefix(self.app_id) + name
        raise AttributeError(name)

    @property
    def final_channel(self) -> str:
        return prefix(self.app_id) + "final"

    def runner_final_channel(self, runner_id: str) -> str:
        """Final events of the invocations that a runner's paused invocations wait on."""
        return f"{self.final_channel}:{runner_id}"

    def keys(self, names: list[str] | tuple[str, ...]) -> list[str]:
        return [self.key(name) for name in names]

    def all_keys(self) -> list[str]:
        return self.keys(KEY_NAMES)


def queue_priority(score: float) -> int:
    """The priority encoded in a queue score."""
    return -int(score // PRIORITY_UNIT)
