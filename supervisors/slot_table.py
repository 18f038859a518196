"""Shared-memory table of runner slots, read by the supervisor without any round trip.

Every runner process owns one fixed-size record (its *slot*) holding its pid, state, the
invocation it is running and a heartbeat.  The supervisor reads all slots to detect hung or
dead runners and to report status, the way gunicorn's arbiter watches worker temp files, but
with richer data and no filesystem metadata calls.

Records are packed with :mod:`struct` (never pickled) so any process can decode them, and each
record is protected by a seqlock: a writer makes the record's counter odd, writes, then makes it
even again; a reader retries until it sees the same even counter before and after copying the
record.  A CRC over the payload is checked too, because CPython gives no memory-barrier
guarantees and on weakly ordered CPUs the stores could become visible out of order.

Write ownership (a seqlock allows exactly one writer per record at a time): the supervisor
parent writes a slot only while no runner owns it (``claim_free_slot`` before fork, ``clear``
after reaping); between those two points only the runner child writes it.  Anyone may read.
"""

from __future__ import annotations

import _posixshmem
import enum
import os
import secrets
import struct
import sys
import threading
import time
import zlib
from collections.abc import Sized
from dataclasses import dataclass, fields, replace
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from types import TracebackType
from typing import Any

MAGIC = b"PYNSLOT\x00"
VERSION = 1
INVOCATION_ID_BYTES = 64
TASK_ID_BYTES = 128
RECORD_SIZE = 256

_HEADER = struct.Struct("<8sIII")  # magic, version, slot count, record size
_HEADER_SIZE = 64  # padded so every record starts 64-byte (cache line) aligned
# The run limit (how many slots may be RUNNING at once) follows the header fields, 8-byte
# aligned, as one native integer: one writer (the supervisor), a single aligned store.
_LIMIT_OFFSET = 24
_LIMIT = struct.Struct("@q")
# The counter deliberately uses the *native* format: CPython packs native 8-byte integers with
# one memcpy, i.e. a single aligned 64-bit store/load, while standard formats ("<Q") are packed
# byte by byte and a reader could see a half-updated counter.
_SEQ = struct.Struct("@Q")
_SEQ_MASK = (1 << 64) - 1
#: the numbers at the front of a payload (pid, state, the two text lengths, times, counters)
_NUMBERS = struct.Struct("<qIBBxxddQQ")
_PAYLOAD = struct.Struct(f"{_NUMBERS.format}{INVOCATION_ID_BYTES}s{TASK_ID_BYTES}s")
_CRC = struct.Struct("<I")
_PAYLOAD_OFFSET = _SEQ.size
#: the state field inside a payload (after the pid), for :meth:`SlotTable.any_in_state`
_STATE = struct.Struct("<I")
_STATE_OFFSET = struct.calcsize("<q")
#: the heartbeat field inside a payload, for :meth:`SlotTable.set_state`
_HEARTBEAT = struct.Struct("<d")
_HEARTBEAT_OFFSET = struct.calcsize("<qIBBxxd")
_RECORD_DATA_SIZE = _PAYLOAD.size + _CRC.size
assert _PAYLOAD_OFFSET + _RECORD_DATA_SIZE <= RECORD_SIZE

# Writers hold a record for microseconds; spin briefly, then yield the CPU, then give up.
_TIGHT_SPINS = 100
_tracker_lock = threading.Lock()


class SlotState(enum.IntEnum):
    EMPTY = 0
    IDLE = 1
    RUNNING = 2
    PAUSED = 3
    STOPPING = 4
    #: paused invocation whose awaited results are in, waiting for a free run permit
    RESUMING = 5


@dataclass(frozen=True)
class Slot:
    """A consistent snapshot of one record."""

    index: int
    pid: int = 0
    state: SlotState = SlotState.EMPTY
    invocation_id: str = ""
    task_id: str = ""
    started_at: float = 0.0  # time.time() when the current invocation started, 0 if none
    heartbeat: float = 0.0  # time.time() of the runner's last sign of life
    invocations_done: int = 0
    rss_bytes: int = 0

    @property
    def holds_permit_idle(self) -> bool:
        """RUNNING with no invocation: an idle runner waiting for work with its run permit held
        (Redis claims for it the moment work arrives; see pynenc.supervisors.permits)."""
        return self.state is SlotState.RUNNING and not self.invocation_id

    @property
    def idle(self) -> bool:
        """Waiting for work, with or without a run permit."""
        return self.state is SlotState.IDLE or self.holds_permit_idle


_WRITABLE_FIELDS = frozenset(f.name for f in fields(Slot)) - {"index"}


class SlotTableFull(RuntimeError):
    """No EMPTY slot is left to claim."""


class SlotReadTimeout(RuntimeError):
    """A record stayed mid-update too long: its writer most likely died during a write."""


def truncate_utf8(text: str, limit: int) -> bytes:
    """Encode ``text`` to at most ``limit`` bytes without splitting a multi-byte character."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    # A cut prefix of valid UTF-8 can only be invalid at its very end, so "ignore" drops
    # exactly the partial trailing character and nothing else.
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def _encode(slot: Slot) -> bytes:
    inv = truncate_utf8(slot.invocation_id, INVOCATION_ID_BYTES)
    task = truncate_utf8(slot.task_id, TASK_ID_BYTES)
    numbers = (slot.started_at, slot.heartbeat, slot.invocations_done, slot.rss_bytes)
    return _pack(slot.pid, int(slot.state), inv, task, *numbers)


def _pack(pid: int, state: int, inv: bytes, task: bytes, started: float, beat: float, done: int, rss: int) -> bytes:
    """A record's data: the payload and its CRC (``inv`` and ``task`` already truncated)."""
    payload = _PAYLOAD.pack(pid, state, len(inv), len(task), started, beat, done, rss, inv, task)
    return payload + _CRC.pack(zlib.crc32(payload))


def _decode(index: int, payload: bytes, *, lenient: bool = False) -> Slot:
    pid, state, inv_len, task_len, started, beat, done, rss, inv, task = _PAYLOAD.unpack(payload)
    try:
        slot_state = SlotState(state)
    except ValueError:
        if not lenient:
            raise
        slot_state = SlotState.EMPTY
    texts = inv[:inv_len].decode("utf-8", "replace"), task[:task_len].decode("utf-8", "replace")
    return Slot(index, pid, slot_state, *texts, started, beat, done, rss)


def _untracked(name: str, create: bool = False, size: int = 0) -> SharedMemory:
    """Create or open a segment without the multiprocessing resource tracker.

    Before Python 3.13 every SharedMemory registers with the resource tracker: a separate
    interpreter process (spawned on first use, several MiB of memory for each pool) that
    unlinks the segment when the registering process exits and warns about a "leak". For an
    attaching process that would destroy the owner's table. The owner unlinks its table
    itself on close, and :func:`pynenc.supervisors.leftovers.sweep_stale` removes the tables
    of supervisors that died without closing. Suppressing the registration, instead of
    unregistering afterwards, never starts the tracker at all.
    """
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, create=create, size=size, track=False)  # type: ignore[call-arg,unused-ignore]
    original = resource_tracker.register
    target = name.lstrip("/")

    def register(name: Sized, rtype: str) -> None:  # same signature as the original
        if rtype != "shared_memory" or str(name).lstrip("/") != target:
            original(name, rtype)

    with _tracker_lock:  # keeps concurrent callers from restoring each other's patch
        resource_tracker.register = register
        try:
            return SharedMemory(name=name, create=create, size=size)
        finally:
            resource_tracker.register = original


class SlotTable:
    """Fixed number of slots in one shared-memory segment.  Use :meth:`create` or :meth:`attach`."""

    def __init__(self, shm: SharedMemory, n_slots: int, *, owner: bool) -> None:
        self._shm = shm
        self._n_slots = n_slots
        # Only the creating process unlinks: forked children inherit this object and must not.
        self._owner_pid = os.getpid() if owner else None
        self._closed = False
        # Every slot's state field in one unpack (a permit take reads them all, per invocation).
        gap = RECORD_SIZE - _STATE.size
        self._states = struct.Struct("<" + f"I{gap}x" * (n_slots - 1) + "I")

    @classmethod
    def create(cls, n_slots: int, name: str | None = None) -> SlotTable:
        if not 1 <= n_slots <= 65536:
            raise ValueError(f"n_slots must be in 1..65536, got {n_slots}")
        shm_name = name or f"pynenc_slots_{os.getpid()}_{secrets.token_hex(4)}"
        shm = _untracked(shm_name, create=True, size=_HEADER_SIZE + n_slots * RECORD_SIZE)
        table = cls(shm, n_slots, owner=True)
        for index in range(n_slots):  # a zero-filled record would fail its CRC check
            table._store(index, Slot(index))
        table.set_limit(n_slots)
        # Header last, so an attacher that validates the magic never sees blank records.
        _HEADER.pack_into(table._locate(0)[0], 0, MAGIC, VERSION, n_slots, RECORD_SIZE)
        return table

    @classmethod
    def attach(cls, name: str) -> SlotTable:
        shm = _untracked(name)
        try:
            if shm.buf is None or shm.size < _HEADER_SIZE:
                raise ValueError(f"shared memory {name!r} is too small to be a slot table")
            magic, version, n_slots, record_size = _HEADER.unpack_from(shm.buf, 0)
            if magic != MAGIC or version != VERSION or record_size != RECORD_SIZE:
                raise ValueError(f"shared memory {name!r} is not a version {VERSION} slot table")
            if shm.size < _HEADER_SIZE + n_slots * RECORD_SIZE:
                raise ValueError(f"shared memory {name!r} is truncated")
        except BaseException:
            shm.close()
            raise
        return cls(shm, n_slots, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    @property
    def size(self) -> int:
        return self._n_slots

    @property
    def is_owner(self) -> bool:
        return self._owner_pid == os.getpid()

    def close(self) -> None:
        """Unmap the segment; the owner process also unlinks it."""
        if self._closed:
            return
        self._closed = True
        self._shm.close()
        if self.is_owner:
            # Not SharedMemory.unlink(): before Python 3.13 it starts the resource tracker.
            try:
                _posixshmem.shm_unlink("/" + self._shm.name.lstrip("/"))
            except FileNotFoundError:
                pass

    def __enter__(self) -> SlotTable:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _locate(self, index: int) -> tuple[memoryview, int]:
        """The mapped buffer and the byte offset of record ``index``."""
        buf = self._shm.buf
        if self._closed or buf is None:
            raise ValueError("slot table is closed")
        if not 0 <= index < self._n_slots:
            raise IndexError(f"slot {index} out of range 0..{self._n_slots - 1}")
        return buf, _HEADER_SIZE + index * RECORD_SIZE

    def _store(self, index: int, slot: Slot) -> None:
        self._store_data(index, _encode(slot))

    def _store_data(self, index: int, data: bytes) -> None:
        # Encoded before: keeps the odd (busy) window as short as possible.
        buf, base = self._locate(index)
        (seq,) = _SEQ.unpack_from(buf, base)
        # "| 1" also moves past a counter left odd by a writer that died mid-update.
        busy = ((seq + 1) | 1) & _SEQ_MASK
        _SEQ.pack_into(buf, base, busy)
        start = base + _PAYLOAD_OFFSET
        buf[start : start + len(data)] = data
        _SEQ.pack_into(buf, base, (busy + 1) & _SEQ_MASK)

    def read(self, index: int, timeout: float = 1.0) -> Slot:
        """Return a consistent snapshot of slot ``index``, retrying while it is being written."""
        buf, base = self._locate(index)
        start = base + _PAYLOAD_OFFSET
        deadline: float | None = None
        spins = 0
        while True:
            (before,) = _SEQ.unpack_from(buf, base)
            if before % 2 == 0:
                raw = bytes(buf[start : start + _RECORD_DATA_SIZE])
                (after,) = _SEQ.unpack_from(buf, base)
                payload = raw[: _PAYLOAD.size]
                if before == after and _CRC.unpack_from(raw, _PAYLOAD.size)[0] == zlib.crc32(payload):
                    return _decode(index, payload)
            spins += 1
            if spins > _TIGHT_SPINS:
                now = time.monotonic()
                deadline = deadline or now + timeout
                if now >= deadline:
                    raise SlotReadTimeout(f"slot {index} stayed mid-update for {timeout}s")
                os.sched_yield()

    def read_dead(self, index: int) -> Slot:
        """Slot ``index`` of a runner known to be dead: a consistent read when possible, else best effort.

        A writer killed mid-update leaves its record odd (busy) forever, so :meth:`read`
        would time out; nobody writes it any more, so the bytes can be taken as they are.
        """
        try:
            return self.read(index, timeout=0.05)
        except SlotReadTimeout:
            return self._read_own(index)

    def read_all(self) -> list[Slot]:
        return [self.read(index) for index in range(self._n_slots)]

    def _read_own(self, index: int) -> Slot:
        # Only the slot's single writer calls this, so nothing changes under it; lenient
        # because a previous owner may have died mid-write and left a garbled record.
        buf, base = self._locate(index)
        start = base + _PAYLOAD_OFFSET
        return _decode(index, bytes(buf[start : start + _PAYLOAD.size]), lenient=True)

    def write(self, index: int, **changes: Any) -> Slot:
        """Update the given :class:`Slot` fields of slot ``index`` (caller must own the slot)."""
        unknown = set(changes) - _WRITABLE_FIELDS
        if unknown:
            raise TypeError(f"unknown slot fields: {sorted(unknown)}")
        if "state" in changes:
            changes["state"] = SlotState(changes["state"])
        slot = replace(self._read_own(index), **changes)
        self._store(index, slot)
        return slot

    def claim_free_slot(self, pid: int = 0) -> int:
        """Mark the first EMPTY slot IDLE for ``pid`` and return its index (supervisor only).

        Call it before fork with ``pid=0`` so the child knows its slot, then let the child
        record its own pid (``write(i, pid=os.getpid())``); the parent must not write it
        again until it has reaped the child and calls :meth:`clear`.
        """
        for slot in self.read_all():
            if slot.state is SlotState.EMPTY:
                self._store(slot.index, Slot(slot.index, pid=pid, state=SlotState.IDLE, heartbeat=time.time()))
                return slot.index
        raise SlotTableFull(f"all {self._n_slots} slots are in use")

    def find_pid(self, pid: int) -> int | None:
        return next((s.index for s in self.read_all() if s.pid == pid and s.state is not SlotState.EMPTY), None)

    def heartbeat(self, index: int, rss_bytes: int | None = None) -> Slot:
        if rss_bytes is None:
            return self.write(index, heartbeat=time.time())
        return self.write(index, heartbeat=time.time(), rss_bytes=rss_bytes)

    def set_running(self, index: int, invocation_id: str, task_id: str) -> None:
        """RUNNING ``invocation_id`` from now on (counts nothing done)."""
        self._running(index, invocation_id, task_id, count_left=False)

    def set_idle(self, index: int) -> Slot:
        """Back to IDLE; leaving RUNNING with an invocation counts one more finished invocation."""
        # Once per idle spell of a runner: packed directly, as _running does.
        buf, base = self._locate(index)
        pid, state, inv_len, _, _, _, done, rss = _NUMBERS.unpack_from(buf, base + _PAYLOAD_OFFSET)
        if state == SlotState.RUNNING and inv_len:
            done += 1
        now = time.time()
        self._store_data(index, _pack(pid, SlotState.IDLE, b"", b"", 0.0, now, done, rss))
        return Slot(index, pid, SlotState.IDLE, "", "", 0.0, now, done, rss)

    def switch_running(self, index: int, invocation_id: str, task_id: str) -> None:
        """RUNNING one invocation -> RUNNING the next (permit kept); the one left counts as done."""
        self._running(index, invocation_id, task_id, count_left=True)

    def _running(self, index: int, invocation_id: str, task_id: str, count_left: bool) -> None:
        # Once per invocation, so without Slot objects: only the fields kept (pid, count, RSS)
        # and the state are read, and the new record is packed from them directly.
        buf, base = self._locate(index)
        pid, state, inv_len, _, _, _, done, rss = _NUMBERS.unpack_from(buf, base + _PAYLOAD_OFFSET)
        if count_left and state == SlotState.RUNNING and inv_len:
            done += 1
        now = time.time()
        inv = truncate_utf8(invocation_id, INVOCATION_ID_BYTES)
        task = truncate_utf8(task_id, TASK_ID_BYTES)
        self._store_data(index, _pack(pid, SlotState.RUNNING, inv, task, now, now, done, rss))

    def set_state(self, index: int, state: SlotState, heartbeat: float) -> None:
        """Change only the state and heartbeat of slot ``index`` (its writer only), keeping the
        other fields as stored: a permit hand-over does this for every claim, so it patches
        the two fields in the stored bytes instead of decoding and encoding a whole record."""
        buf, base = self._locate(index)
        start = base + _PAYLOAD_OFFSET
        payload = bytearray(buf[start : start + _PAYLOAD.size])
        _STATE.pack_into(payload, _STATE_OFFSET, int(state))
        _HEARTBEAT.pack_into(payload, _HEARTBEAT_OFFSET, heartbeat)
        self._store_data(index, bytes(payload) + _CRC.pack(zlib.crc32(payload)))

    def set_paused(self, index: int) -> Slot:
        return self.write(index, state=SlotState.PAUSED, heartbeat=time.time())

    def set_stopping(self, index: int) -> Slot:
        return self.write(index, state=SlotState.STOPPING, heartbeat=time.time())

    def clear(self, index: int) -> None:
        """Reset slot ``index`` to EMPTY (supervisor, after reaping the slot's runner)."""
        self._store(index, Slot(index))

    def set_limit(self, limit: int) -> None:
        """How many slots may be RUNNING at once (written by the supervisor only)."""
        buf, _ = self._locate(0)
        _LIMIT.pack_into(buf, _LIMIT_OFFSET, limit)

    def limit(self) -> int:
        buf, _ = self._locate(0)
        (value,) = _LIMIT.unpack_from(buf, _LIMIT_OFFSET)
        return int(value)

    def state_of(self, index: int) -> SlotState:
        """Slot ``index``'s state field alone (exact for the slot's own writer, which alone
        changes it; advisory for anyone else), without decoding the record."""
        buf, base = self._locate(index)
        try:
            return SlotState(_STATE.unpack_from(buf, base + _PAYLOAD_OFFSET + _STATE_OFFSET)[0])
        except ValueError:
            return SlotState.EMPTY

    def in_state(self, index: int, state: SlotState) -> bool:
        """Whether slot ``index``'s state field is ``state`` (as :meth:`state_of`, without
        building an enum member: a runner asks before every claim)."""
        buf, base = self._locate(index)
        return bool(_STATE.unpack_from(buf, base + _PAYLOAD_OFFSET + _STATE_OFFSET)[0] == state)

    def any_in_state(self, state: SlotState) -> bool:
        """Whether some slot shows ``state``: an advisory glance at the state fields only (no
        consistent snapshot, no CRC), cheap enough for a runner to ask before every claim."""
        buf, _ = self._locate(0)
        return int(state) in self._states.unpack_from(buf, _HEADER_SIZE + _PAYLOAD_OFFSET + _STATE_OFFSET)

    def states(self) -> list[int]:
        """The state field of every slot, as ints: advisory, without a consistent snapshot or CRC.

        Enough under the permit lock: a slot only enters RUNNING there, so a count of RUNNING
        can only be too high (one leaving meanwhile), never too low.
        """
        buf, _ = self._locate(0)
        return list(self._states.unpack_from(buf, _HEADER_SIZE + _PAYLOAD_OFFSET + _STATE_OFFSET))

    def idle_holders(self) -> int:
        """How many slots hold a run permit with no invocation: idle runners waiting for work
        that they will claim in the backend the moment it arrives (advisory, as states())."""
        return sum(1 for slot in self.read_all() if slot.holds_permit_idle)

    def count(self, state: SlotState) -> int:
        return sum(1 for slot in self.read_all() if slot.state is state)
