"""The runner classes on the supervisor's pool (run in this process), and the default backend."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynenc.runners.process_runner import MultiThreadRunner, PersistentProcessRunner, ProcessRunner

from tests.integration import test_supervisor_tasks as t
from tests.integration.test_supervisor_tasks import backend_fixture, env_fixture  # noqa: F401  (fixtures)

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def start_pool(env: dict[str, str]) -> Iterator[Any]:
    started: list[tuple[Any, threading.Thread]] = []

    def start(runner_cls: str, **settings: Any) -> Any:
        t.app.conf.runner_cls = runner_cls
        for name, value in settings.items():
            t.app.conf.set(name, value)
        runner = t.app.runner
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        started.append((runner, thread))
        return runner

    yield start
    for runner, thread in started:
        runner.stop_runner_loop()
        thread.join(30)
        assert not thread.is_alive(), "pool did not stop"
    t.app.conf.runner_cls = "DummyRunner"


@SQLITE_ONLY
def test_persistent_process_runner_runs_fan_out_on_few_processes(start_pool: Any) -> None:
    runner = start_pool("PersistentProcessRunner", processes=2, max_paused=4, graceful_timeout=5.0)
    assert isinstance(runner, PersistentProcessRunner)
    parents = list(t.parent.parallelize([(i,) for i in range(20)]))
    assert [p.get_result(60) for p in parents] == [2 * i + 3 for i in range(20)]
    assert t.max_executing_at_once(p.invocation_id for p in parents) <= 2


@SQLITE_ONLY
def test_process_runner_uses_a_fresh_process_per_invocation(start_pool: Any) -> None:
    runner = start_pool("ProcessRunner", processes=2, graceful_timeout=5.0)
    assert isinstance(runner, ProcessRunner)
    pids = [inv.get_result(60) for inv in [t.pid_of_runner() for _ in range(12)]]
    assert len(set(pids)) == 12


@pytest.mark.parametrize("backend", ["redis"])  # where a waiting task's runner could run the child itself
def test_process_runner_runs_an_awaited_child_in_a_process_of_its_own(start_pool: Any) -> None:
    start_pool("ProcessRunner", processes=2, graceful_timeout=5.0)
    parent_pid, child_pid = t.pids_with_child().get_result(60)
    assert parent_pid != child_pid


@SQLITE_ONLY
def test_multi_thread_runner_runs_processes_with_threads(start_pool: Any) -> None:
    runner = start_pool("MultiThreadRunner", processes=2, max_threads=3, graceful_timeout=5.0)
    assert isinstance(runner, MultiThreadRunner)
    parents = list(t.parent.parallelize([(i,) for i in range(10)]))
    assert [p.get_result(60) for p in parents] == [2 * i + 3 for i in range(10)]
    pids = {inv.get_result(60) for inv in t.pid_of_runner.parallelize([() for _ in range(30)])}
    assert 1 <= len(pids) <= 2


@SQLITE_ONLY
def test_runner_start_cli_with_persistent_process_runner_stops_on_term(env: dict[str, str], tmp_path: Path) -> None:
    environment = {
        **t.clean_environ(),
        **env,
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__PROCESSES": "2",
        "PYNENC__GRACEFUL_TIMEOUT": "5",
    }
    log = (tmp_path / "runner.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pynenc.cli", "--app", t.APP_SPEC, "runner", "start"],
        cwd=t.REPO,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert [inv.get_result(60) for inv in t.add.parallelize([(i, i) for i in range(30)])] == [
            2 * i for i in range(30)
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_supervisor_on_the_default_backend_switches_to_sqlite_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "plain_tasks.py").write_text(
        "from pynenc import Pynenc\napp = Pynenc(app_id='plain')\n\n@app.task\ndef double(x):\n    return 2 * x\n"
    )
    environment = {**t.clean_environ(), "PYNENC__LOGGING_FORMAT": "json"}
    log_path = tmp_path / "supervisor.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pynenc.supervisors", "--app", "plain_tasks.app", "--processes", "1"],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            line = t.wait_until(
                lambda: next((x for x in log_path.read_text().splitlines() if "PYNENC__SQLITE_DB_PATH=" in x), None),
                30,
                "the shared backend notice",
            )
            assert str(tmp_path / "plain.db") in line
            client = subprocess.run(
                [sys.executable, "-c", "from plain_tasks import double; print(double(21).get_result(60))"],
                cwd=tmp_path,
                env={**environment, "PYNENC__SQLITE_DB_PATH": str(tmp_path / "plain.db")},
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert client.stdout.strip() == "42", client.stderr
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
