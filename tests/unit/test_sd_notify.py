"""Unit tests for supervisors/sd_notify.py, driven through real AF_UNIX datagram sockets."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

MODULE_PATH = Path(__file__).resolve().parents[2] / "supervisors" / "sd_notify.py"


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_pynenc_test_sd_notify", MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sd = _load_module()
Notifier: Any = sd.Notifier


class Receiver:
    """The systemd side: a bound datagram socket and the NOTIFY_SOCKET value naming it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        sock.settimeout(5.0)  # a missing datagram fails the test instead of hanging it

    def recv(self) -> bytes:
        return self.sock.recv(4096)

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(4096)
        finally:
            self.sock.settimeout(5.0)


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory under /tmp keeps the path well inside sun_path's 108-byte limit.
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        yield Receiver(sock, path)
        sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"pynenc-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield Receiver(sock, "@" + name)
    sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    fixture_name = "path_receiver" if request.param == "path" else "abstract_receiver"
    result: Receiver = request.getfixturevalue(fixture_name)
    return result


def test_exact_datagrams(receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value})
    assert notifier.enabled
    try:
        assert notifier.ready() is True
        assert receiver.recv() == b"READY=1"
        assert notifier.status("3/4 runners up") is True
        assert receiver.recv() == b"STATUS=3/4 runners up"
        assert notifier.watchdog() is True
        assert receiver.recv() == b"WATCHDOG=1"
        assert notifier.stopping() is True
        assert receiver.recv() == b"STOPPING=1"
        assert notifier.ready(status="serving") is True
        assert receiver.recv() == b"READY=1\nSTATUS=serving"
        assert notifier.stopping(status="draining") is True
        assert receiver.recv() == b"STOPPING=1\nSTATUS=draining"
        assert notifier.notify(errno=5, status="bad\nline") is True
        assert receiver.recv() == b"ERRNO=5\nSTATUS=bad line"
        assert notifier.extend_timeout(2.5) is True
        assert receiver.recv() == b"EXTEND_TIMEOUT_USEC=2500000"
        assert notifier.reloading() is True
        assert re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=\d+", receiver.recv())
        assert notifier.notify() is False  # nothing to say, nothing sent
        receiver.assert_empty()
    finally:
        notifier.close()


def test_unicode_status(path_receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path_receiver.env_value})
    assert notifier.status("café ✓")
    assert path_receiver.recv() == "STATUS=café ✓".encode()
    notifier.close()


def test_noop_without_notify_socket() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.reloading() is False
    assert notifier.watchdog_interval() is None
    notifier.close()


def test_unsupported_socket_is_disabled_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "unsupported NOTIFY_SOCKET" in caplog.text


def test_send_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": os.path.join(tmp, "nobody-listens.sock")})
        with caplog.at_level(logging.DEBUG):
            assert notifier.ready() is False
            assert notifier.watchdog() is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "a failure streak warns once, then logs at debug"
        assert "READY=1" in warnings[0].getMessage()
        notifier.close()


def test_recovers_after_socket_appears(caplog: pytest.LogCaptureFixture) -> None:
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = os.path.join(tmp, "late.sock")
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert notifier.watchdog() is False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            receiver = Receiver(sock, path)
            assert notifier.watchdog() is True
            assert receiver.recv() == b"WATCHDOG=1"
        finally:
            sock.close()
            notifier.close()


def test_unset_environment(path_receiver: Receiver) -> None:
    env = {
        "NOTIFY_SOCKET": path_receiver.env_value,
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
        "OTHER": "kept",
    }
    notifier = Notifier.from_env(env, unset_environment=True)
    assert env == {"OTHER": "kept"}
    assert notifier.watchdog_interval() == 15.0
    assert notifier.ready()
    assert path_receiver.recv() == b"READY=1"
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "SELF"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process is watched
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {k: (str(os.getpid()) if v == "SELF" else v) for k, v in env.items()}
    assert sd.watchdog_interval(env) == expected
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert notifier.watchdog_interval() == expected


def test_watchdog_interval_explicit_pid_and_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1234"}
    assert sd.watchdog_interval(env, pid=1234) == 2.0
    assert sd.watchdog_interval(env, pid=4321) is None
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sd.watchdog_interval() == 4.0
