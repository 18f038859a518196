"""The app and tasks the supervisor tests run, plus the harness that drives a real daemon.

The supervisor is started as a real process (``python -m pynenc.supervisors``) from the
repository root with ``--app tests.integration.test_supervisor_tasks.app``; the test
process imports this same module, so task ids match on both sides.  Backend settings reach
the daemon through ``PYNENC__*`` environment variables.  No tests live here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pynenc import ConcurrencyControlType, Pynenc
from pynenc.status import InvocationStatus

REPO = Path(__file__).resolve().parents[2]
APP_SPEC = "tests.integration.test_supervisor_tasks.app"

app = Pynenc()  # app id and backend come from PYNENC__* in the daemon, configure() here
_hoard: list[bytearray] = []


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def parent(i: int) -> int:
    first, second = add(i, 1), add(i, 2)
    return first.result + second.result


@app.task
def chain(depth: int) -> int:
    """Waits on itself one level less deep: ``depth`` waits nested inside each other."""
    return 0 if depth == 0 else chain(depth - 1).result + 1


@app.task(running_concurrency=ConcurrencyControlType.TASK)
def one_at_a_time(i: int) -> int:
    time.sleep(0.02)
    return i


@app.task
def gather_one_at_a_time(n: int) -> int:
    return sum(one_at_a_time.parallelize([(i,) for i in range(n)]).results)


@app.task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def wait_for_nap(seconds: float) -> float:
    return nap(seconds).result


@app.task
def pid_of_runner() -> int:
    return os.getpid()


@app.task
def pids_with_child() -> list[int]:
    """This invocation's process, then that of a child it waits on."""
    return [os.getpid(), pid_of_runner().result]


@app.task
def slow(marker: str, seconds: float) -> int:
    """Announce the start in ``marker`` (holding the runner pid), then sleep."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


@app.task
def hang_first_time(marker: str) -> int:
    """The first run spins forever (pure Python, no sleep); later runs return their pid."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        while True:
            pass
    return os.getpid()


@app.task
def poison() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def hog(mib: int) -> int:
    """Keep ``mib`` MiB alive in the runner (touched, so it counts in RSS)."""
    _hoard.append(bytearray(b"x" * (mib * 1024 * 1024)))
    return os.getpid()


# ----- harness ------------------------------------------------------------------------------
def configure(backend: str, request: Any, app: Pynenc = app) -> dict[str, str]:
    """Point ``app`` at a fresh app id on ``backend``; return the env the daemon needs for the same."""
    app.conf.app_id = f"sv-{uuid.uuid4().hex[:10]}"
    app.conf.dev_mode_force_sync_tasks = False
    app.conf.logging_level = "WARNING"
    env = {"PYNENC__APP_ID": app.conf.app_id}
    if backend == "sqlite":
        db = str(request.getfixturevalue("tmp_path") / "pynenc.db")
        app.conf.sqlite_db_path = db
        env["PYNENC__SQLITE_DB_PATH"] = db
        prefix = "SQLite"
    else:
        url = request.getfixturevalue("redis_url")
        app.conf.redis_url = url
        env["PYNENC__REDIS_URL"] = url
        prefix = "Redis"
    for kind in ("orchestrator", "broker", "state_backend"):
        value = f"{prefix}{''.join(p.title() for p in kind.split('_'))}"
        setattr(app.conf, f"{kind}_cls", value)
        env[f"PYNENC__{kind.upper()}_CLS"] = value
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def clean_environ() -> dict[str, str]:
    """This environment without pynenc settings or systemd variables (a daemon gets only what a test sets)."""
    skip = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    return {k: v for k, v in os.environ.items() if not k.startswith("PYNENC") and k not in skip}


class Daemon:
    """A real ``pynenc-supervisor`` process with its JSON log in a file."""

    def __init__(
        self, env: dict[str, str], args: Iterable[str], log_path: Path, app_spec: str = APP_SPEC, cwd: Path = REPO
    ) -> None:
        self.log_path = log_path
        full_env = clean_environ()
        full_env.update(
            {"PYNENC__LOGGING_FORMAT": "json", "PYNENC__LOGGING_LEVEL": "INFO", "PYTHONDONTWRITEBYTECODE": "1"}
        )
        full_env.update(env)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pynenc.supervisors", "--app", app_spec, *args],
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def wait_event(self, name: str, timeout: float = 20.0, count: int = 1) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            if self.proc.poll() is not None and len(self.events_named(name)) < count:
                raise AssertionError(f"supervisor exited ({self.proc.returncode}) before {name!r}:\n{self.tail()}")
            events = self.events_named(name)
            return events if len(events) >= count else None

        result: list[dict[str, Any]] = wait_until(found, timeout, f"log event {name!r} x{count}\n")
        return result

    def ready(self, timeout: float = 30.0) -> Daemon:
        self.wait_event("supervisor ready", timeout)
        return self

    def runner_pids(self) -> set[int]:
        """Live runner processes (every live child: the supervisor starts no helper processes)."""
        pids = set()
        try:
            for child in psutil.Process(self.pid).children():
                try:
                    if child.status() != psutil.STATUS_ZOMBIE:
                        pids.add(child.pid)
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
        return pids

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Kill whatever is left of the daemon's process group (a test that failed midway)."""
        if self.proc.poll() is None and os.environ.get("PYNENC_TEST_DUMP"):
            for pid in self.runner_pids():
                os.kill(pid, signal.SIGUSR2)
            time.sleep(1)
            Path(f"/tmp/sv-debug-{self.pid}.log").write_text(self.log_path.read_text(errors="replace"))
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def statuses(ids: Iterable[str]) -> dict[str, InvocationStatus | None]:
    return {i: app.orchestrator.get_status(i) for i in ids}


def all_final(ids: list[str]) -> bool:
    return all(s is not None and s.is_final for s in statuses(ids).values())


def max_executing_at_once(ids: Iterable[str]) -> int:
    """The most invocations RUNNING or RESUMED at one instant, from the recorded histories.

    Each RUNNING/RESUMED entry opens an interval that the invocation's next entry closes;
    at equal timestamps a close is counted before an open (a permit handed over).
    """
    points: list[tuple[float, int]] = []
    executing = {InvocationStatus.RUNNING, InvocationStatus.RESUMED}
    for invocation_id in ids:
        record = app.orchestrator.get_record(invocation_id)
        assert record is not None
        history = record.history
        for entry, following in zip(history, history[1:], strict=False):
            if entry.status in executing:
                points.append((entry.timestamp, 1))
                points.append((following.timestamp, -1))
        if history and history[-1].status in executing:
            points.append((history[-1].timestamp, 1))
    current = peak = 0
    for _, delta in sorted(points):
        current += delta
        peak = max(peak, current)
    return peak


# ----- fixtures (imported by the test_supervisor* modules) ---------------------------------
@pytest.fixture(name="backend", params=["sqlite", "redis"])
def backend_fixture(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(name="env")
def env_fixture(backend: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    values = configure(backend, request)
    yield values
    app.purge()
    app.reset_components()


@pytest.fixture(name="daemon")
def daemon_fixture(env: dict[str, str], tmp_path: Path) -> Iterator[DaemonFactory]:
    started: list[Daemon] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, **kwargs: Any) -> Daemon:
        log = tmp_path / f"supervisor-{len(started)}.log"
        process = Daemon({**env, **(extra_env or {})}, args, log, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


DaemonFactory = Callable[..., Daemon]
#: what a test module imports to get the fixtures above
FIXTURES = (backend_fixture, env_fixture, daemon_fixture)
