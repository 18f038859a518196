"""Operating the supervisor: shutdowns, reload, scaling, recycling, systemd notify."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynenc.status import InvocationStatus
from tests.integration import test_supervisor_tasks as t
from tests.integration.test_supervisor_tasks import (  # noqa: F401  (fixtures)
    DaemonFactory,
    backend_fixture,
    daemon_fixture,
    env_fixture,
)

S = InvocationStatus
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def _start_slow(tmp_path: Path, seconds: float) -> tuple[Any, int]:
    marker = tmp_path / f"slow-{time.monotonic_ns()}"
    inv = t.slow(str(marker), seconds)
    pid = int(t.wait_until(lambda: marker.exists() and marker.read_text(), 20, "the slow task to start"))
    return inv, pid


def test_warm_shutdown_lets_the_running_invocation_finish_and_claims_nothing_more(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    sup = daemon("--processes", "1", "--graceful-timeout", "30").ready()
    running, _ = _start_slow(tmp_path, 1.0)
    queued = list(t.add.parallelize([(i, 0) for i in range(3)]))
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0
    assert t.app.orchestrator.get_status(running.invocation_id) is S.SUCCESS
    assert set(t.statuses(q.invocation_id for q in queued).values()) == {S.REGISTERED}
    assert sup.events_named("warm shutdown")


@SQLITE_ONLY
def test_warm_shutdown_past_graceful_timeout_requeues_without_a_stall(daemon: DaemonFactory, tmp_path: Path) -> None:
    sup = daemon("--processes", "1", "--graceful-timeout", "1").ready()
    running, runner_pid = _start_slow(tmp_path, 120.0)
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0
    record = t.app.orchestrator.get_record(running.invocation_id)
    assert record is not None and record.status is S.REROUTED and record.stalls == 0 and record.owner is None
    assert sup.events_named("runner did not stop in time: killing it")[0]["runner_pid"] == runner_pid


@SQLITE_ONLY
@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGQUIT,)], ids=["term-term", "quit"])
def test_cold_shutdown_requeues_running_invocations_at_once(
    daemon: DaemonFactory, tmp_path: Path, signals: tuple[int, ...]
) -> None:
    sup = daemon("--processes", "1", "--graceful-timeout", "120").ready()
    running, runner_pid = _start_slow(tmp_path, 120.0)
    for number, signum in enumerate(signals, 1):
        sup.send(signum)
        if number < len(signals):
            sup.wait_event("warm shutdown")
    assert sup.wait(30) == 0
    record = t.app.orchestrator.get_record(running.invocation_id)
    assert record is not None and record.status is S.REROUTED and record.stalls == 0
    assert sup.events_named("cold shutdown")
    t.wait_until(lambda: not os.path.exists(f"/proc/{runner_pid}"), 10, "the runner to be gone")


@pytest.fixture
def hup_module(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    source = tmp_path / "hup_tasks.py"
    source.write_text(
        "from pynenc import Pynenc\n\napp = Pynenc()\nVERSION = 1\n\n\n"
        "@app.task\ndef version() -> int:\n    return VERSION\n"
    )
    sys.path.insert(0, str(tmp_path))
    module = importlib.import_module("hup_tasks")
    yield module, source
    module.app.purge()
    module.app.reset_components()
    sys.path.remove(str(tmp_path))
    sys.modules.pop("hup_tasks", None)


def test_hup_reimports_the_app_and_replaces_runners(
    daemon: DaemonFactory, backend: str, request: pytest.FixtureRequest, hup_module: tuple[Any, Path], tmp_path: Path
) -> None:
    module, source = hup_module
    env = t.configure(backend, request, module.app)
    sup = daemon("--processes", "2", extra_env=env, app_spec="hup_tasks.app", cwd=tmp_path).ready()
    assert module.version().get_result(30) == 1
    old_runners = t.wait_until(lambda: len(sup.runner_pids()) == 2 and sup.runner_pids(), 10, "two runners")
    source.write_text(source.read_text().replace("VERSION = 1", "VERSION = 2222"))
    sup.send(signal.SIGHUP)
    sup.wait_event("reloading: replacing runners")
    t.wait_until(lambda: len(sup.runner_pids()) == 2 and not sup.runner_pids() & old_runners, 20, "new runners")
    assert module.version().get_result(30) == 2222
    assert sup.proc.poll() is None
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@SQLITE_ONLY
def test_hup_with_broken_code_keeps_the_running_app(
    daemon: DaemonFactory, backend: str, request: pytest.FixtureRequest, hup_module: tuple[Any, Path], tmp_path: Path
) -> None:
    module, source = hup_module
    env = t.configure(backend, request, module.app)
    sup = daemon("--processes", "1", extra_env=env, app_spec="hup_tasks.app", cwd=tmp_path).ready()
    source.write_text(source.read_text() + "\nraise ImportError('half-deployed')\n")
    sup.send(signal.SIGHUP)
    failure = sup.wait_event("reload failed: keeping the running app")[0]
    assert "half-deployed" in failure["error"]
    assert module.version().get_result(30) == 1
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


def _published(sup: t.Daemon) -> dict[str, Any] | None:
    info = t.app.state_backend.list_info("supervisor")
    found: dict[str, Any] | None = info.get(f"{socket.gethostname()}:{sup.pid}")
    return found


def test_ttin_ttou_resize_the_pool_and_the_published_snapshot_follows(daemon: DaemonFactory) -> None:
    sup = daemon("--processes", "2").ready()
    t.wait_until(lambda: len(sup.runner_pids()) == 2, 10, "two runners")
    sup.send(signal.SIGTTIN)
    t.wait_until(lambda: len(sup.runner_pids()) == 3, 10, "a third runner")
    snapshot = t.wait_until(
        lambda: (s := _published(sup)) and s["processes"] == 3 and len(s["slots"]) == 3 and s,
        10,
        "the snapshot with 3 processes",
    )
    assert {"host", "pid", "started_at", "processes", "max_paused", "app", "slots"} <= set(snapshot)
    assert snapshot["app"] == t.APP_SPEC and snapshot["pid"] == sup.pid
    slot_keys = {"index", "pid", "state", "invocation_id", "task_id", "started_at", "heartbeat", "done", "rss"}
    assert all(set(slot) == slot_keys for slot in snapshot["slots"])
    assert {slot["pid"] for slot in snapshot["slots"]} == sup.runner_pids()
    assert all(slot["state"] == "idle" and slot["rss"] > 0 for slot in snapshot["slots"])
    # one at a time: two identical signals sent back to back may arrive as one
    sup.send(signal.SIGTTOU)
    t.wait_until(lambda: len(sup.runner_pids()) == 2, 20, "two runners left")
    sup.send(signal.SIGTTOU)
    t.wait_until(lambda: len(sup.runner_pids()) == 1, 20, "one runner left")
    t.wait_until(lambda: (s := _published(sup)) and s["processes"] == 1, 10, "the snapshot with 1 process")
    assert t.add(1, 1).get_result(30) == 2
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@SQLITE_ONLY
def test_max_tasks_per_child_recycles_runners(daemon: DaemonFactory) -> None:
    sup = daemon("--processes", "1", "--max-tasks-per-child", "3").ready()
    pids = [t.pid_of_runner().get_result(30) for _ in range(10)]
    per_runner = Counter(pids)
    assert max(per_runner.values()) == 3 and len(per_runner) == 4
    assert len(sup.events_named("runner recycled")) >= 3
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@SQLITE_ONLY
def test_max_memory_per_child_recycles_a_runner_after_it_grows(daemon: DaemonFactory) -> None:
    sup = daemon("--processes", "1", "--max-memory-per-child", "250").ready()
    small = {t.pid_of_runner().get_result(30) for _ in range(3)}
    assert len(small) == 1, "a runner under the limit must not be recycled"
    grown = t.hog(300).get_result(30)
    after = t.pid_of_runner().get_result(30)
    assert after != grown
    recycled = sup.events_named("runner recycled")
    assert recycled and "max_memory_per_child=250" in recycled[0]["reason"] and recycled[0]["runner_pid"] == grown
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@SQLITE_ONLY
def test_sd_notify_through_a_real_datagram_socket(daemon: DaemonFactory) -> None:
    directory = tempfile.mkdtemp(prefix="pynenc-notify-")
    path = os.path.join(directory, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(0.2)
        sup = daemon("--processes", "2", extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        messages: list[tuple[int, str]] = []

        def receive_until(key: str) -> bool:
            try:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                return False
            sender = next(
                (
                    int.from_bytes(d[:4], sys.byteorder)
                    for level, kind, d in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                ),
                -1,
            )
            messages.append((sender, data.decode()))
            return any(line.startswith(key) for _, text in messages for line in text.splitlines())

        t.wait_until(lambda: receive_until("READY=1"), 30, "READY=1", interval=0)
        sup.wait_event("supervisor ready", 10)
        t.wait_until(lambda: receive_until("WATCHDOG=1"), 10, "WATCHDOG=1", interval=0)
        t.wait_until(lambda: receive_until("STATUS="), 10, "STATUS=", interval=0)
        sup.send(signal.SIGTERM)
        t.wait_until(lambda: receive_until("STOPPING=1"), 10, "STOPPING=1", interval=0)
        assert sup.wait(30) == 0
        assert {sender for sender, _ in messages} == {sup.pid}, "only the supervisor may notify"
        status = next(line for _, text in messages for line in text.splitlines() if line.startswith("STATUS="))
        assert "runner processes" in status
    finally:
        sock.close()
        os.unlink(path) if os.path.exists(path) else None
        os.rmdir(directory)


def test_a_runner_stops_on_a_burst_of_sigterm(daemon: DaemonFactory) -> None:
    # A runner gets SIGTERM twice when the whole process group is signalled (from the sender,
    # then from the supervisor's warm stop). A handler that took a lock (Event.set) could be
    # re-entered inside itself by the second signal and deadlock the runner for good.
    sup = daemon("--processes", "2").ready()
    t.wait_until(lambda: len(sup.runner_pids()) == 2, 30, "two runners")
    assert t.add(1, 2).get_result(60) == 3
    runners = sup.runner_pids()
    for pid in runners:
        for _ in range(200):
            os.kill(pid, signal.SIGTERM)
    t.wait_until(lambda: not (runners & sup.runner_pids()), 20, "the signalled runners to exit")
    assert len(sup.events_named("runner exiting")) >= len(runners)
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0
