"""The supervisor under faults: hung runners, poison tasks, a killed supervisor, bad apps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pynenc.exceptions import StalledInvocationError
from pynenc.status import InvocationStatus
from tests.integration import test_supervisor_tasks as t
from tests.integration.test_supervisor_tasks import (  # noqa: F401  (fixtures)
    DaemonFactory,
    backend_fixture,
    daemon_fixture,
    env_fixture,
)
from tests.redis_servers import RedisServer, find_free_port

S = InvocationStatus
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@SQLITE_ONLY
def test_hung_runner_is_killed_after_runner_timeout_and_its_invocation_retried(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    sup = daemon("--processes", "2", "--runner-timeout", "3").ready()
    marker = tmp_path / "hung"
    inv = t.hang_first_time(str(marker))
    hung_pid = int(t.wait_until(lambda: marker.exists() and marker.read_text(), 20, "the task to hang"))
    result = inv.get_result(30)
    assert result != hung_pid
    record = t.app.orchestrator.get_record(inv.invocation_id)
    assert record is not None and record.status is S.SUCCESS and record.stalls == 1
    timed_out = sup.events_named("runner timed out: killing it")
    assert [(e["runner_pid"], e["invocation_id"]) for e in timed_out] == [(hung_pid, inv.invocation_id)]
    assert _gone(hung_pid)
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@pytest.mark.parametrize("backend", ["redis"])
def test_idle_runners_holding_permits_outlive_a_redis_outage_longer_than_runner_timeout(
    fresh_redis_server: RedisServer, daemon: DaemonFactory
) -> None:
    # (the server first: set up before the daemon's fixtures, torn down after their purge)
    # On Redis an idle runner waits for work holding its run permit (slot RUNNING, no
    # invocation). It runs no task, so its heartbeat must go on while its wait retries
    # through an outage: a runner killed as hung here would be replaced by one that cannot
    # even boot while Redis is down.
    t.app.conf.redis_url = fresh_redis_server.url
    t.app.reset_components()
    runner_timeout = 2.0
    sup = daemon(
        "--processes", "2", "--runner-timeout", str(runner_timeout),
        extra_env={"PYNENC__REDIS_URL": fresh_redis_server.url},
    ).ready()  # fmt: skip
    assert t.add(1, 1).get_result(30) == 2
    pids = t.wait_until(lambda: len(p := sup.runner_pids()) == 2 and p, 20, "two runners")
    fresh_redis_server.stop()
    time.sleep(runner_timeout * 2.5)  # what must not happen within it: nothing to wait on
    fresh_redis_server.start()
    assert not sup.events_named("runner timed out: killing it")
    assert sup.runner_pids() == pids
    assert t.add(2, 3).get_result(60) == 5
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


@SQLITE_ONLY
def test_poison_task_that_kills_its_runner_ends_failed_after_max_stalls(daemon: DaemonFactory) -> None:
    sup = daemon("--processes", "2", "--max-stalls", "2").ready()
    inv = t.poison()
    with pytest.raises(StalledInvocationError, match="max_stalls=2"):
        inv.get_result(60)
    record = t.app.orchestrator.get_record(inv.invocation_id)
    assert record is not None and record.status is S.FAILED and record.stalls == 3
    deaths = sup.events_named("runner killed by SIGKILL (perhaps out of memory)")
    assert len(deaths) == 3
    # the pool is whole again and still serves
    assert t.add(20, 22).get_result(30) == 42
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_sigkill_of_the_supervisor_its_runners_exit_and_a_new_one_completes_everything(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    options = ("--processes", "2", "--lease-seconds", "1.5", "--recovery-interval", "0.3", "--graceful-timeout", "1")
    first = daemon(*options).ready()
    marker = tmp_path / "started"
    running = t.slow(str(marker), 5.0)
    t.wait_until(marker.exists, 20, "the slow task to start")
    runners = first.runner_pids()
    assert len(runners) == 2
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    t.wait_until(lambda: all(_gone(pid) for pid in runners), 20, "orphaned runners to exit")
    queued = list(t.add.parallelize([(i, 1) for i in range(50)]))
    second = daemon(*options).ready()
    assert [inv.get_result(60) for inv in queued] == [i + 1 for i in range(50)]
    assert running.get_result(60) not in runners
    record = t.app.orchestrator.get_record(running.invocation_id)
    assert record is not None and record.status is S.SUCCESS and record.stalls == 1
    second.send(signal.SIGTERM)
    assert second.wait(30) == 0


def _run_supervisor(args: list[str], cwd: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pynenc.supervisors", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_app_that_fails_to_import_exits_4_naming_module_and_error(tmp_path: Path) -> None:
    source = "from pynenc import Pynenc\napp = Pynenc()\nraise RuntimeError('boom at import')\n"
    (tmp_path / "broken_tasks.py").write_text(source)
    done = _run_supervisor(["--app", "broken_tasks.app"], tmp_path, {})
    assert done.returncode == 4, done.stderr
    assert "broken_tasks" in done.stderr and "RuntimeError: boom at import" in done.stderr
    assert "runner started" not in done.stderr

    missing = _run_supervisor(["--app", "no_such_module_xyz.app"], tmp_path, {})
    assert missing.returncode == 4
    assert "no_such_module_xyz" in missing.stderr and "ModuleNotFoundError" in missing.stderr


def test_runner_boot_failure_exits_3_without_a_restart_loop(tmp_path: Path) -> None:
    (tmp_path / "unreachable_tasks.py").write_text("from pynenc import Pynenc\napp = Pynenc()\n")
    dead_url = f"redis://127.0.0.1:{find_free_port()}"
    env = {
        "PYNENC__ORCHESTRATOR_CLS": "RedisOrchestrator",
        "PYNENC__BROKER_CLS": "RedisBroker",
        "PYNENC__STATE_BACKEND_CLS": "RedisStateBackend",
        "PYNENC__REDIS_URL": dead_url,
        "PYNENC__LOGGING_FORMAT": "json",
    }
    done = _run_supervisor(["--app", "unreachable_tasks.app", "--processes", "2"], tmp_path, env)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count('runner failed to boot"') <= 2  # the first failures halt it: no respawning
    assert "failed to boot" in done.stderr or "backend unavailable" in done.stderr


def test_wrong_setting_value_exits_5(tmp_path: Path) -> None:
    (tmp_path / "ok_tasks.py").write_text("from pynenc import Pynenc\napp = Pynenc()\n")
    done = _run_supervisor(["--app", "ok_tasks.app", "--processes", "many"], tmp_path, {})
    assert done.returncode == 5
    assert "processes" in done.stderr and "many" in done.stderr


def test_a_memory_backend_chosen_on_purpose_is_refused_with_exit_5(tmp_path: Path) -> None:
    (tmp_path / "mem_tasks.py").write_text("from pynenc import Pynenc\napp = Pynenc()\n")
    env = {
        f"PYNENC__{kind}_CLS": f"Mem{name}"
        for kind, name in (("ORCHESTRATOR", "Orchestrator"), ("BROKER", "Broker"), ("STATE_BACKEND", "StateBackend"))
    }
    done = _run_supervisor(["--app", "mem_tasks.app"], tmp_path, env)
    assert done.returncode == 5, done.stderr
    assert "memory backend" in done.stderr and "redis_url" in done.stderr
