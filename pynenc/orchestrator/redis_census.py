"""The Redis backend's inspection reads: what ``pynenc status`` asks (answered without reading
every record) and the supervisor's read of what a dead runner owned (from the leases).

The scripts keep, in the ``counts`` hash, how many stored invocations of each task are
in each status (``"<status>\\t<task id>" -> n``; each script call adds the net change of
what it moved, see ``redis_prelude.lua``), and, in the ``failed_at`` zset, when each
failure happened. With those and ``final_at``:

- counts per task and status: one HGETALL of a hash with one field per (task, status);
- finished in a window: one ZCOUNT on ``final_at``;
- failed in the last hour: the ids ``failed_at`` lists for the window (failures only);
- the queued invocation waiting longest: the head of each priority band of the queue
  (FIFO within a band), plus the parked ones.

The counts are trusted only while the ``~valid`` field is present: the register script
sets it when the app stores nothing yet (a new or purged app). An app whose records
predate the counts gets ``None`` from :meth:`RedisCensus.counters` and is counted by
scanning, as before.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from pynenc.models import InvocationRecord
from pynenc.orchestrator.base import counts_by_task, failed_by_task, status_since
from pynenc.redis_keys import PRIORITY_UNIT
from pynenc.status import OWNED, QUEUED, InvocationStatus

if TYPE_CHECKING:
    from pynenc.redis_client import RedisConnection
    from pynenc.redis_keys import RedisKeys
    from pynenc.state_backend.redis_state_backend import RedisStateBackend

VALID_FIELD = "~valid"
#: ids read from the front of each priority band: a band's first back-of-queue entry is its
#: oldest, and up to this many re-queued-at-the-front entries may stand before it
BAND_HEAD = 20
#: bands (distinct queued priorities) looked at, and parked ids read, at most
MAX_BANDS = 200
MAX_PARKED = 1000


class RedisCensus:
    """The inspection reads of one app; the orchestrator's read methods delegate here."""

    def __init__(self, conn: RedisConnection, keys: RedisKeys, state: RedisStateBackend) -> None:
        self.conn = conn
        self.keys = keys
        self.state = state

    def iter_records(self, statuses: Iterable[InvocationStatus] | None = None) -> list[InvocationRecord]:
        """Every stored record (optionally only in these statuses): a full read, except for
        owned statuses, which the leases list."""
        wanted = set(statuses) if statuses is not None else None
        if wanted is not None and wanted <= OWNED:
            # Every owned invocation holds a lease (claims add both; finish, release, kill and
            # recovery remove both): the leases list them all, without reading the history
            # kept for result_ttl (a supervisor does this whenever a runner dies).
            ids = self.conn.call(lambda client: client.zrange(self.keys.leases, 0, -1))
            return [r for r in self.state.read_records_of(ids) if r.status in wanted]
        return [r for r in self.state.iter_records() if wanted is None or r.status in wanted]

    def counters(self) -> dict[str, dict[InvocationStatus, int]] | None:
        """Counts per task and status from the counters; None when they are not valid."""
        fields = _pairs(self.conn.command("HGETALL", self.keys.counts))
        if VALID_FIELD not in fields:
            return None
        counts: dict[str, dict[InvocationStatus, int]] = {}
        for field, value in fields.items():
            status, sep, task_id = field.partition("\t")
            number = 0 if not sep else int(_text(value))
            if number == 0:  # "~valid", or no invocation left in that status
                continue
            counts.setdefault(task_id, {})[InvocationStatus(status)] = number
        return counts

    def task_status_counts(self) -> dict[str, dict[InvocationStatus, int]]:
        by_task = self.counters()
        if by_task is None:  # records older than the counters: read them all
            return counts_by_task(self.iter_records())
        return by_task

    def status_counts(self) -> dict[InvocationStatus, int]:
        by_task = self.counters()
        if by_task is None:  # records older than the counters: count the state hash's statuses
            return {InvocationStatus(name): n for name, n in Counter(self.state.statuses().values()).items()}
        totals: Counter[InvocationStatus] = Counter()
        for per_status in by_task.values():
            totals.update(per_status)
        return dict(totals)

    def final_count_since(self, since: float) -> int:
        return int(self.conn.command("ZCOUNT", self.keys.final_at, _score(since), "+inf"))

    def failed_since(self, since: float) -> dict[str, int]:
        ids = self.conn.command("ZRANGEBYSCORE", self.keys.failed_at, _score(since), "+inf")
        # a failure retried since is no longer FAILED; its old entry stays until it expires
        return failed_by_task(self.state.read_records_of(_text(i) for i in ids or []), since)

    def oldest_queued_candidates(self) -> list[str]:
        """Ids among which the queued invocation waiting longest is: each priority band's
        head (the queue is FIFO within a band) and the parked (CONCURRENCY_CONTROLLED) ids."""
        candidates: list[str] = []
        low = "-inf"
        for _ in range(MAX_BANDS):
            reply = self.conn.command(
                "ZRANGEBYSCORE", self.keys.queue, low, "+inf", "WITHSCORES", "LIMIT", 0, BAND_HEAD
            )
            head = list(_pairs(reply).items())
            if not head:
                break
            candidates += [invocation_id for invocation_id, _ in head]
            band = math.floor(float(head[0][1]) / PRIORITY_UNIT)
            low = str((band + 1) * PRIORITY_UNIT)  # the next band starts there
        for value in _parked_lists(self.conn.command("HVALS", self.keys.parked) or []):
            if len(candidates) >= MAX_BANDS * BAND_HEAD + MAX_PARKED:
                break
            candidates.append(value)
        return candidates

    def oldest_queued(self) -> InvocationRecord | None:
        candidates = self.state.read_records_of(self.oldest_queued_candidates())
        return min((r for r in candidates if r.status in QUEUED), key=status_since, default=None)


def _pairs(reply: Any) -> dict[str, Any]:
    """A reply of field/value (or member/score) pairs as a dict, in reply order: a flat list
    from pynenc's client, a dict or a list of pairs from redis-py's cluster client."""
    if not reply:
        return {}
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    if isinstance(reply[0], list | tuple):
        return {_text(k): v for k, v in reply}
    return {_text(k): v for k, v in zip(reply[0::2], reply[1::2], strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _score(seconds: float) -> str:
    return f"{seconds:.6f}"


def _parked_lists(raw_lists: list[Any]) -> Iterable[str]:
    for raw in raw_lists:
        try:
            ids = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(ids, list):
            yield from (str(i) for i in ids)
