"""The installed ``pynenc`` console script, as an operator runs it, against a real supervisor.

Real processes only: ``pynenc-supervisor`` (started by the supervisor tests' harness) forks
runner processes on SQLite or Redis; ``pynenc`` runs as a subprocess from the repository
root; purge's confirmation is answered through a real pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli_app
from tests.cli_helpers import APP_SPEC as APP
from tests.cli_helpers import validate
from tests.integration import test_supervisor_tasks as t
from tests.integration.backends import BACKENDS
from tests.redis_servers import find_free_port

PYNENC = Path(sys.executable).parent / "pynenc"
BACKEND_SETTINGS = ("orchestrator_cls", "broker_cls", "state_backend_cls", "sqlite_db_path", "redis_url")


@pytest.fixture(params=["sqlite", "redis"])
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """tests.cli_app.app on a shared backend, and the environment that gives subprocesses the same."""
    app = cli_app.app
    app_id = f"cli-smoke-{uuid.uuid4().hex[:8]}"
    app.conf.app_id = app_id
    BACKENDS[request.param](app, request)
    app.conf.logging_level = "WARNING"
    values = {"PYNENC_CLI_TEST_APP_ID": app_id}
    for name in BACKEND_SETTINGS:
        value = getattr(app.conf, name)
        if value is not None:
            values[f"PYNENC__{name.upper()}"] = str(value)
    yield values
    app.purge()
    app.reset_components()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC")}
    return {**base, "PYNENC__LOGGING_LEVEL": "WARNING", "COLUMNS": "160", **extra}


def pynenc(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert PYNENC.exists(), f"console script not installed at {PYNENC} (pip install -e .)"
    return subprocess.run(
        [str(PYNENC), "--app", APP, *args],
        cwd=t.REPO,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pynenc_json(env: dict[str, str], schema: str, *args: str) -> Any:
    done = pynenc(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    validate(schema, data)
    return data


def test_status_of_a_live_supervisor_then_kill_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    daemon = t.Daemon(env, ["--processes", "2"], tmp_path / "supervisor.log", app_spec=APP)
    try:
        daemon.ready()
        marker = tmp_path / "started"
        slow = cli_app.slow(str(marker), 120.0)
        t.wait_until(marker.exists, 30, "the slow invocation to start in a runner")

        def slot_shows_it() -> Any:
            data = pynenc_json(env, "status", "status")
            mine = [s for s in data["supervisors"] if s["pid"] == daemon.pid]
            running = [slot for s in mine for slot in s["slots"] if slot["invocation_id"] == slow.invocation_id]
            return data if running else None

        overview = t.wait_until(slot_shows_it, 30, "the supervisor to publish the running slot")
        (supervisor,) = [s for s in overview["supervisors"] if s["pid"] == daemon.pid]
        assert supervisor["alive"] and supervisor["processes"] == 2
        slot = next(s for s in supervisor["slots"] if s["invocation_id"] == slow.invocation_id)
        assert slot["state"] == "RUNNING" and slot["task_id"] == "tests.cli_app.slow"
        assert slot["pid"] == int(marker.read_text()) and slot["rss"] > 0
        assert overview["status_counts"]["RUNNING"] == 1

        runners = pynenc_json(env, "runners", "status", "runners")
        pids = {r["pid"] for r in runners["runners"] if r["alive"]}
        assert int(marker.read_text()) in pids, runners["runners"]

        detail = pynenc_json(env, "invocation", "status", "invocation", slow.invocation_id)
        assert detail["status"] == "RUNNING" and detail["owner"]
        assert detail["arguments"]["seconds"] == "120.0"

        text = pynenc(env, "status")
        assert text.returncode == 0, text.stderr
        assert f"pid {daemon.pid}" in text.stdout and slow.invocation_id in text.stdout
        assert "\x1b[" not in text.stdout  # no colours when stdout is not a terminal

        killed = pynenc(env, "invocation", "kill", slow.invocation_id)
        assert killed.returncode == 0, killed.stderr
        assert "RUNNING -> KILLED" in killed.stdout
        assert pynenc_json(env, "invocation", "status", "invocation", slow.invocation_id)["status"] == "KILLED"
        missing = pynenc(env, "status", "invocation", uuid.uuid4().hex)
        assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        daemon.send(signal.SIGQUIT)  # cold shutdown: the killed invocation's sleep is not waited for
        code = daemon.wait(60)
        daemon.close()
    assert code == 0, daemon.tail()


def _read_until(fd: int, needle: bytes | None, timeout: float) -> bytes:
    """Read a pty until ``needle`` shows up, or (None) until the other side closes; poll with a deadline."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle is None or needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} on the terminal; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: every process on the terminal has closed it
            break
        if not chunk:
            break
        seen += chunk
    return seen


def _purge_on_a_terminal(env: dict[str, str], answer: bytes) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(PYNENC), "--app", APP, "purge"],
            cwd=t.REPO,
            env=clean_env(env),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        prompt = _read_until(master, b"[y/N]", 60)
        os.write(master, answer + b"\n")
        rest = _read_until(master, None, 60)
        return process.wait(60), prompt + rest
    finally:
        os.close(master)


def test_purge_asks_on_a_terminal(env: dict[str, str]) -> None:
    kept = [cli_app.add(i, i) for i in range(3)]
    code, output = _purge_on_a_terminal(env, b"n")
    assert code == 1, output
    assert b"Remove all 3 invocations of app" in output and b"purge cancelled" in output
    assert all(cli_app.app.orchestrator.get_status(i.invocation_id) is not None for i in kept)

    code, output = _purge_on_a_terminal(env, b"y")
    assert code == 0, output
    assert b"3 invocations removed" in output
    assert all(cli_app.app.orchestrator.get_status(i.invocation_id) is None for i in kept)


def test_no_redis_is_one_line_with_the_url_and_exit_3() -> None:
    url = f"redis://:hunter2@127.0.0.1:{find_free_port()}/0"
    settings = {
        "PYNENC__ORCHESTRATOR_CLS": "RedisOrchestrator",
        "PYNENC__BROKER_CLS": "RedisBroker",
        "PYNENC__STATE_BACKEND_CLS": "RedisStateBackend",
        "PYNENC__REDIS_URL": url,
    }
    for args in (
        ("status",),
        ("status", "--json"),
        ("status", "tasks"),
        ("invocation", "kill", "x"),
        ("purge", "--yes"),
    ):
        done = pynenc(settings, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "hunter2" not in done.stderr and url.replace("hunter2", "***") in done.stderr
        assert done.stdout == ""


def test_watch_on_a_terminal_redraws_in_colour_sized_to_the_terminal(env: dict[str, str]) -> None:
    cli_app.add(1, 2)
    cli_app.fail("x")
    master, slave = pty.openpty()
    columns = 70
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    try:
        process = subprocess.Popen(
            [str(PYNENC), "--app", APP, "status", "--watch", "--count", "3", "--interval", "0.2"],
            cwd=t.REPO,
            env={k: v for k, v in clean_env(env).items() if k not in ("COLUMNS", "NO_COLOR")},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        output = _read_until(master, None, 60)
        assert process.wait(60) == 0, output
    finally:
        os.close(master)
    text = output.decode(errors="replace")
    assert "\x1b[" in text  # colours and cursor movement: this is a terminal
    assert text.count("\x1b[2K") > 0 or text.count("\x1b[1A") > 0, "the screen was not redrawn in place"
    # Cursor movements (redrawing in place) end a line; colour codes take no room.
    plain = re.sub(r"\x1b\[[0-9;?]*[A-LN-Za-z]", "\n", text)
    plain = re.sub(r"\x1b\[[0-9;?]*m", "", plain)
    assert "tests.cli_app.add" in plain and "REGISTERED" in plain
    widest = max(len(line) for line in plain.replace("\r", "").split("\n"))
    assert widest <= columns, f"a line is {widest} wide on a {columns}-column terminal"
