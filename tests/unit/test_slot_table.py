"""Unit tests for supervisors/slot_table.py (loaded by file path: no installed package needed)."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import textwrap
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Event
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

MODULE_PATH = Path(__file__).resolve().parents[2] / "supervisors" / "slot_table.py"


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_pynenc_test_slot_table", MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


st = _load_module()
SlotTable: Any = st.SlotTable
SlotState: Any = st.SlotState
Slot: Any = st.Slot

FORK = multiprocessing.get_context("fork")
CHILD_TIMEOUT = 30.0  # generous upper bound for a blocked pipe/join; never a sleep


@pytest.fixture
def table() -> Any:
    t = SlotTable.create(4)
    yield t
    t.close()


def _shm_path(name: str) -> Path:
    return Path("/dev/shm") / name


def test_round_trip(table: Any) -> None:
    written = table.write(
        1,
        pid=4321,
        state=SlotState.RUNNING,
        invocation_id="inv-1",
        task_id="app.tasks.add",
        started_at=1.5,
        heartbeat=2.5,
        invocations_done=7,
        rss_bytes=3 << 40,
    )
    expected = Slot(1, 4321, SlotState.RUNNING, "inv-1", "app.tasks.add", 1.5, 2.5, 7, 3 << 40)
    assert written == expected
    assert table.read(1) == expected
    assert table.size == 4
    assert [s.state for s in table.read_all()] == [SlotState.EMPTY, SlotState.RUNNING, SlotState.EMPTY, SlotState.EMPTY]
    assert table.count(SlotState.RUNNING) == 1
    assert table.count(SlotState.EMPTY) == 3
    # A partial write keeps the other fields.
    table.write(1, rss_bytes=10)
    assert table.read(1) == Slot(1, 4321, SlotState.RUNNING, "inv-1", "app.tasks.add", 1.5, 2.5, 7, 10)


def test_lifecycle_helpers(table: Any) -> None:
    assert table.claim_free_slot(100) == 0
    assert table.claim_free_slot(101) == 1
    first = table.read(0)
    assert (first.pid, first.state, first.invocations_done) == (100, SlotState.IDLE, 0)
    assert first.heartbeat > 0
    assert table.find_pid(101) == 1
    assert table.find_pid(999) is None

    assert not table.in_state(0, SlotState.RUNNING) and not table.any_in_state(SlotState.RUNNING)
    table.set_running(0, "inv-9", "tasks.mul")
    assert table.in_state(0, SlotState.RUNNING) and not table.in_state(1, SlotState.RUNNING)
    assert table.any_in_state(SlotState.RUNNING) and not table.any_in_state(SlotState.RESUMING)
    running = table.read(0)
    assert (running.state, running.invocation_id, running.task_id) == (SlotState.RUNNING, "inv-9", "tasks.mul")
    assert running.started_at == running.heartbeat > 0
    before = table.read(0).heartbeat
    assert table.heartbeat(0, rss_bytes=2048).heartbeat >= before
    assert table.read(0).rss_bytes == 2048

    idle = table.set_idle(0)
    assert (idle.state, idle.invocation_id, idle.task_id, idle.started_at) == (SlotState.IDLE, "", "", 0.0)
    assert idle.invocations_done == 1
    assert table.set_idle(0).invocations_done == 1  # IDLE -> IDLE finishes nothing
    assert table.set_paused(0).state is SlotState.PAUSED
    assert table.set_stopping(0).state is SlotState.STOPPING
    assert table.count(SlotState.STOPPING) == 1

    table.clear(0)
    assert table.read(0) == Slot(0)
    assert table.claim_free_slot(102) == 0  # a cleared slot is reused first


def test_errors(table: Any) -> None:
    for i in range(table.size):
        table.claim_free_slot(i + 1)
    with pytest.raises(st.SlotTableFull):
        table.claim_free_slot(99)
    with pytest.raises(TypeError, match="bogus"):
        table.write(0, bogus=1)
    with pytest.raises(IndexError):
        table.read(4)
    with pytest.raises(IndexError):
        table.read(-1)
    with pytest.raises(ValueError):
        SlotTable.create(0)


def test_truncation_at_utf8_boundary(table: Any) -> None:
    inv = "a" * 63 + "é"  # 65 bytes: the 2-byte "é" would straddle the 64-byte limit
    task = "€" * 50  # 150 bytes of 3-byte characters
    slot = table.write(2, invocation_id=inv, task_id=task)
    assert slot.invocation_id == inv  # the dataclass echoes input; the stored record is what matters
    stored = table.read(2)
    assert stored.invocation_id == "a" * 63
    assert stored.task_id == "€" * 42  # 126 bytes, the largest whole-character prefix <= 128
    exact = "x" * 64
    assert table.write(2, invocation_id=exact).invocation_id == exact
    assert table.read(2).invocation_id == exact
    assert st.truncate_utf8("ab😀", 5) == b"ab"
    assert st.truncate_utf8("ab😀", 6) == "ab😀".encode()
    assert st.truncate_utf8("", 0) == b""


def _child_lifecycle(table: Any, index: int, conn: Connection) -> None:
    table.write(index, pid=os.getpid())
    table.heartbeat(index, rss_bytes=12345)
    conn.send("beat")
    conn.recv()
    table.set_running(index, "inv-fork", "tasks.forked")
    conn.send("running")
    conn.recv()
    table.set_idle(index)
    table.close()  # a forked child's close must not unlink the parent's segment
    conn.send("idle")


def test_forked_child_writes_parent_reads(table: Any) -> None:
    index = table.claim_free_slot(0)  # before fork, so the child knows its slot
    parent_conn, child_conn = FORK.Pipe()
    child = FORK.Process(target=_child_lifecycle, args=(table, index, child_conn))
    child.start()
    try:
        assert parent_conn.poll(CHILD_TIMEOUT) and parent_conn.recv() == "beat"
        slot = table.read(index)
        assert (slot.pid, slot.state, slot.rss_bytes) == (child.pid, SlotState.IDLE, 12345)
        assert table.find_pid(child.pid) == index
        parent_conn.send("go")

        assert parent_conn.poll(CHILD_TIMEOUT) and parent_conn.recv() == "running"
        slot = table.read(index)
        assert (slot.state, slot.invocation_id, slot.task_id) == (SlotState.RUNNING, "inv-fork", "tasks.forked")
        parent_conn.send("go")

        assert parent_conn.poll(CHILD_TIMEOUT) and parent_conn.recv() == "idle"
        slot = table.read(index)
        assert (slot.state, slot.invocations_done) == (SlotState.IDLE, 1)
    finally:
        child.join(CHILD_TIMEOUT)
    assert child.exitcode == 0
    assert _shm_path(table.name).exists()
    table.clear(index)  # the parent owns the slot again once the child is reaped
    assert table.read(index) == Slot(index)


N_WRITES = 20_000
MAX_READS = 400_000


def _record_for(k: int) -> dict[str, Any]:
    # Every field derives from k, so a record mixing two writes is detectable.
    return {
        "pid": k,
        "state": SlotState(k % 5),
        "invocation_id": f"{k:08d}" * 8,  # exactly 64 bytes
        "task_id": f"{k:08d}" * 16,  # exactly 128 bytes
        "started_at": k + 0.25,
        "heartbeat": k + 0.5,
        "invocations_done": k,
        "rss_bytes": k * 4096,
    }


def _hammer(table: Any, go: Event, done: Event) -> None:
    go.wait(CHILD_TIMEOUT)
    for k in range(1, N_WRITES + 1):
        table.write(0, **_record_for(k))
    done.set()


def test_concurrent_reader_never_sees_torn_record(table: Any) -> None:
    go, done = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hammer, args=(table, go, done))
    child.start()
    seen: set[int] = set()
    try:
        go.set()
        for _ in range(MAX_READS):
            if done.is_set():
                break
            slot = table.read(0)
            if slot.pid == 0:
                continue  # the writer has not started yet
            expected = Slot(0, **_record_for(slot.pid))
            assert slot == expected, f"torn record: {slot}"
            seen.add(slot.pid)
    finally:
        child.join(CHILD_TIMEOUT)
    assert child.exitcode == 0
    assert table.read(0) == Slot(0, **_record_for(N_WRITES))
    # The reader must actually have raced the writer for the test to mean anything.
    assert len(seen) > 10, f"reader only observed {len(seen)} distinct writes"


def test_dead_writer_mid_update_times_out_then_clear_repairs(table: Any) -> None:
    table.write(3, pid=77)
    base = st._HEADER_SIZE + 3 * st.RECORD_SIZE
    (seq,) = st._SEQ.unpack_from(table._shm.buf, base)
    st._SEQ.pack_into(table._shm.buf, base, seq + 1)  # as if the writer died with the counter odd
    with pytest.raises(st.SlotReadTimeout):
        table.read(3, timeout=0.05)
    assert table.read_dead(3).pid == 77  # the supervisor still learns what the dead runner held
    table.clear(3)
    assert table.read(3) == Slot(3)


def test_run_limit_lives_in_the_header(table: Any) -> None:
    assert table.limit() == 4  # defaults to the slot count
    table.set_limit(2)
    other = SlotTable.attach(table.name)
    try:
        assert other.limit() == 2
    finally:
        other.close()


def test_only_leaving_running_with_an_invocation_counts_as_done(table: Any) -> None:
    table.write(0, state=SlotState.RUNNING)  # holding a run permit while claiming, nothing claimed
    assert table.set_idle(0).invocations_done == 0
    table.set_running(0, "inv-1", "tasks.add")
    assert table.set_idle(0).invocations_done == 1


def test_switching_to_the_next_invocation_counts_the_one_left_and_keeps_the_runners_fields(table: Any) -> None:
    table.write(0, pid=4242, rss_bytes=5 * 1024 * 1024)
    table.set_running(0, "inv-1", "tasks.add")
    first = table.read(0)
    table.switch_running(0, "inv-2", "tasks.mul")
    second = table.read(0)
    assert (second.state, second.invocation_id, second.task_id) == (SlotState.RUNNING, "inv-2", "tasks.mul")
    assert (second.pid, second.rss_bytes, second.invocations_done) == (4242, 5 * 1024 * 1024, 1)
    assert second.started_at == second.heartbeat >= first.started_at
    table.write(0, state=SlotState.PAUSED)  # resuming shows the waiting one again: nothing left ran
    table.switch_running(0, "inv-2", "tasks.mul")
    assert table.read(0).invocations_done == 1
    table.switch_running(0, "i" * 100, "t" * 200)  # cut to the record's fields, as write() cuts them
    long = table.read(0)
    assert (len(long.invocation_id), len(long.task_id), long.invocations_done) == (64, 128, 2)


def test_close_unlinks_segment() -> None:
    owner = SlotTable.create(2)
    name = owner.name
    assert _shm_path(name).exists()
    other = SlotTable.attach(name)
    assert other.size == 2 and other.name == name
    owner.write(1, pid=5)
    assert other.read(1).pid == 5
    other.close()
    other.close()  # idempotent
    assert _shm_path(name).exists(), "an attached table must not unlink on close"
    owner.close()
    assert not _shm_path(name).exists()
    with pytest.raises(FileNotFoundError):
        SlotTable.attach(name)
    with pytest.raises(ValueError, match="closed"):
        owner.read(0)


def test_context_manager_and_explicit_name() -> None:
    name = f"pynenc_test_{os.getpid()}"
    with SlotTable.create(1, name=name) as t:
        assert t.name == name and t.is_owner
    assert not _shm_path(name).exists()


def test_attach_rejects_foreign_segment() -> None:
    foreign = SharedMemory(create=True, size=4096)
    try:
        with pytest.raises(ValueError, match="not a version"):
            SlotTable.attach(foreign.name)
    finally:
        foreign.close()
        foreign.unlink()


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    prelude = f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("slot_table", {str(MODULE_PATH)!r})
        st = importlib.util.module_from_spec(spec)
        sys.modules["slot_table"] = st
        spec.loader.exec_module(st)
    """
    script = textwrap.dedent(prelude) + textwrap.dedent(code)
    # stderr is also inherited by the resource tracker process, so capturing it until EOF
    # collects any "leaked shared_memory" warning or KeyError traceback the tracker prints.
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_attach_from_another_process_neither_unlinks_nor_warns(table: Any) -> None:
    table.write(0, pid=4242)
    result = _run_python(f"""
        t = st.SlotTable.attach({table.name!r})
        print(t.read(0).pid)
        t.close()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4242"
    assert result.stderr == ""
    assert _shm_path(table.name).exists()
    with SlotTable.attach(table.name) as again:
        assert again.read(0).pid == 4242


def test_owner_and_attacher_in_one_process_leave_tracker_quiet() -> None:
    result = _run_python("""
        import os
        owner = st.SlotTable.create(2)
        other = st.SlotTable.attach(owner.name)
        other.close()
        owner.close()
        print(os.path.exists("/dev/shm/" + owner.name))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert result.stderr == ""
