"""RedisStateBackend: invocation records and runner info stored in Redis.

Records are written by the RedisOrchestrator's scripts (see
:mod:`pynenc.redis_keys` for the key schema) and read here in one script call,
so a read is a consistent snapshot even while runners change the invocation.
Runner and supervisor info (``publish_info``/``list_info``) lives in the
``info`` hash with per-entry expiry in ``info_exp``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from pynenc.exceptions import BackendUnavailableError
from pynenc.models import HistoryEntry, InvocationRecord
from pynenc.redis_client import RedisConnection, connection_for, preload_process
from pynenc.redis_keys import LEGACY_KEY_NAMES, RedisKeys
from pynenc.state_backend.base import BaseStateBackend
from pynenc.status import InvocationStatus

#: Invocations moved per upgrade call, and the most calls one process makes (10 million ids).
UPGRADE_BATCH = 1000
UPGRADE_MAX_CALLS = 10_000
READ_FIELDS = 10
#: ids per read-script call when listing every record
READ_BATCH = 200
#: entries per HSCAN call when a whole per-invocation hash is listed (inspection): Redis
#: answers each call in well under a millisecond, where one HKEYS/HVALS of millions of
#: entries would block every runner for seconds
SCAN_COUNT = 5000
#: the id of each script call (ARGV[1]), unique within the process: a call sent again after a
#: lost reply carries it marked (redis_wire.sent_again), and the claims it made are found by it
CALL_IDS = itertools.count(1)


def _json_list(raw: str | None) -> list[Any]:
    if not raw:
        return []
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def state_status(raw: str | None) -> str | None:
    """The status name in a stored state (``"<status>\\t<owner>\\t<task>\\t<keyed>\\t<history>"``,
    see :mod:`pynenc.redis_keys`); None when absent or not a state."""
    if raw is None:
        return None
    parts = raw.split("\t", 4)
    return parts[0] if len(parts) == 5 and parts[0] else None


def record_from_values(invocation_id: str, values: Sequence[str | None]) -> InvocationRecord | None:
    """Build a record from the read script's 10 values; None when the invocation does not exist.

    A corrupted spec does not make the record unreadable: its task and arguments
    read as unknown, so the error stored for it can still be shown.
    """
    spec_raw, status, owner, retries, stalls, result, error, history, waiting_for, waited_by = values
    if status is None:
        return None
    try:
        spec = orjson.loads(spec_raw or "{}")
        if not isinstance(spec, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError):
        spec = {"task_id": "<corrupted>", "arguments": {}}
    entries = []
    for item in _json_list(history):
        try:
            entries.append(HistoryEntry(InvocationStatus(item["s"]), float(item["t"]), item.get("r")))
        except (KeyError, TypeError, ValueError):
            continue
    arguments = spec.get("arguments")
    return InvocationRecord(
        invocation_id=invocation_id,
        task_id=str(spec.get("task_id", "<corrupted>")),
        arguments=dict(arguments) if isinstance(arguments, dict) else {},
        status=InvocationStatus(status),
        call_key=str(spec.get("call_key", "")),
        num_retries=int(retries or 0),
        stalls=int(stalls or 0),
        owner=owner,
        parent_invocation_id=spec.get("parent"),
        created_at=float(spec.get("created_at", 0.0) or 0.0),
        result=result,
        error=error,
        waiting_for=[str(i) for i in _json_list(waiting_for)],
        waited_by=[str(i) for i in _json_list(waited_by)],
        history=entries,
    )


class RedisStateBackend(BaseStateBackend):
    family = "redis"

    @classmethod
    def preload(cls) -> None:
        preload_process()

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.conn: RedisConnection = connection_for(app)
        self.conn.check()
        self.keys = RedisKeys(app.conf.app_id)
        self._channel = self.keys.final_channel.encode()
        #: script name -> the keys its header declares, for this app
        self._script_keys: dict[str, list[bytes]] = {}
        self._upgrade()

    def _upgrade(self) -> None:
        """Move what pynenc 0.1 stored in the status, owner and history hashes into ``state``
        (one EXISTS per process when there is nothing to move)."""
        if not self.conn.command("EXISTS", self.keys.key("status")):
            return
        left = -1
        for _ in range(UPGRADE_MAX_CALLS):
            left = int(self.run("upgrade", UPGRADE_BATCH))
            if left == 0:
                return
        app_id = self.keys.app_id
        raise BackendUnavailableError(f"upgrade of the redis keys of app {app_id!r}: {left} invocations not moved")

    def _keys_of(self, script: str) -> list[bytes]:
        keys = self._script_keys.get(script)
        if keys is None:
            # Encoded once: redis-py passes bytes through, and a script gets up to 20 keys per call.
            names = self.keys.keys(self.conn.scripts[script].key_names)
            keys = self._script_keys[script] = [name.encode() for name in names]
        return keys

    def run(self, script: str, *args: Any) -> Any:
        """Run a script with the KEYS its header names (so Python and Lua cannot disagree)."""
        return self.conn.run(script, self._keys_of(script), [next(CALL_IDS), self._channel, *args])

    def send(self, script: str, *args: Any, after: Sequence[Any] | None = None) -> Callable[[], Any]:
        """:meth:`run`, with the reply read later by the function returned (RedisConnection.send;
        ``after``: a blocking command that the script waits behind)."""
        return self.conn.send(script, self._keys_of(script), [next(CALL_IDS), self._channel, *args], after)

    def send_ahead(self, script: str, what: str, *args: Any) -> None:
        """:meth:`run`, with the reply read before this process's next command (RedisConnection.send_ahead)."""
        self.conn.send_ahead(script, self._keys_of(script), [next(CALL_IDS), self._channel, *args], what)

    def read_records(self, invocation_ids: Sequence[str]) -> list[InvocationRecord | None]:
        """The records of ``invocation_ids`` in order (None where unknown), READ_BATCH per call."""
        records: list[InvocationRecord | None] = []
        for start in range(0, len(invocation_ids), READ_BATCH):
            batch = invocation_ids[start : start + READ_BATCH]
            flat = self.run("read", *batch)
            records += [
                record_from_values(invocation_id, flat[i * READ_FIELDS : (i + 1) * READ_FIELDS])
                for i, invocation_id in enumerate(batch)
            ]
        return records

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        return self.read_records([invocation_id])[0]

    def statuses(self) -> dict[str, str]:
        """Every invocation id with its status name, read page by page (HSCAN): an inspection
        never blocks Redis for long, however many invocations are kept."""

        def scan(client: Any) -> dict[str, str]:
            found: dict[str, str] = {}  # a retried scan starts over: nothing counted twice
            cursor = 0
            while True:
                cursor, page = client.hscan(self.keys.state, cursor, count=SCAN_COUNT)
                for invocation_id, raw in page.items():
                    status = state_status(raw)
                    if status is not None:
                        found[invocation_id] = status
                if int(cursor) == 0:
                    return found

        return self.conn.call(scan)

    def read_records_of(self, invocation_ids: Iterable[str]) -> list[InvocationRecord]:
        """The stored records of ``invocation_ids``, in id order (unknown ids are skipped)."""
        ids = sorted(invocation_ids)
        return [record for record in self.read_records(ids) if record is not None]

    def iter_records(self) -> Iterable[InvocationRecord]:
        return self.read_records_of(self.statuses())

    def publish_info(self, kind: str, key: str, data: dict[str, Any], ttl: float) -> None:
        self.run("info", "put", f"{kind}\x00{key}", json.dumps(data, default=str), ttl)

    def list_info(self, kind: str) -> dict[str, dict[str, Any]]:
        flat = self.run("info", "list", kind)
        entries: dict[str, dict[str, Any]] = {}
        for i in range(0, len(flat), 2):
            try:
                value = json.loads(flat[i + 1])
            except ValueError:
                continue
            if isinstance(value, dict):
                entries[flat[i]] = value
        return entries

    def purge(self) -> None:
        """Delete every key of this app (all share its hash tag, so one DEL works on a cluster)."""
        keys = self.keys.all_keys() + self.keys.keys(LEGACY_KEY_NAMES)
        self.conn.call(lambda client: client.delete(*keys))

    def close(self) -> None:
        self.conn.close()
