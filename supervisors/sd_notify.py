"""The systemd ``sd_notify`` protocol, spoken directly (no python-systemd dependency).

systemd passes ``NOTIFY_SOCKET`` to ``Type=notify`` services: an AF_UNIX datagram socket
(a filesystem path, or an abstract name written with a leading ``@``).  The service sends
newline-separated ``KEY=VALUE`` assignments such as ``READY=1`` or ``WATCHDOG=1``.

Notification is best effort by design: a failed send is logged and ignored, because a
supervisor that crashes over a status message would be far worse than a missed message.
Outside systemd (``NOTIFY_SOCKET`` unset) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

logger = logging.getLogger(__name__)

_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_SEND_TIMEOUT = 1.0  # systemd reads promptly; never let a full queue stall the supervisor loop


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as systemd recommends.

    None when the watchdog is off, malformed, or meant for another process (``WATCHDOG_PID``
    names the process systemd watches; a forked child inherits the variable but is not it).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watched_pid = env.get("WATCHDOG_PID")
    if watched_pid:
        try:
            if int(watched_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd >= 254 inside VMs): not supported here


class Notifier:
    """Sends sd_notify messages to one socket; inert when ``address`` is None."""

    def __init__(self, address: str | None, watchdog_interval: float | None = None) -> None:
        self._address = address
        self._watchdog_interval = watchdog_interval
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset_environment: bool = False) -> Notifier:
        """Build from ``NOTIFY_SOCKET``/``WATCHDOG_*``.

        ``unset_environment=True`` removes those variables (like libsystemd's flag) so runner
        processes forked later do not inherit them and try to notify on the supervisor's behalf.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _socket_address(raw) if raw else None
        if raw and address is None:
            logger.warning("unsupported NOTIFY_SOCKET %r; systemd notifications disabled", raw)
        notifier = cls(address, watchdog_interval(env))
        if unset_environment:
            for var in _ENV_VARS:
                env.pop(var, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None when no watchdog is expected."""
        return self._watchdog_interval if self.enabled else None

    def notify(self, **fields: str | int | float) -> bool:
        """Send ``KEY=VALUE`` lines (keys are upper-cased); True if the datagram was sent."""
        if self._address is None or not fields:
            return False
        # One assignment per line: a newline inside a value would inject another assignment.
        lines = (f"{key.upper()}={' '.join(str(value).splitlines())}" for key, value in fields.items())
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(_SEND_TIMEOUT)
            self._sock.sendto(message, self._address)
        except OSError as exc:
            # Warn once per failure streak: the watchdog pings every few seconds and would flood the log.
            log = logger.debug if self._failing else logger.warning
            log("sd_notify %r failed: %s", message, exc)
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(STOPPING=1)
        return self.notify(STOPPING=1, STATUS=status)

    def reloading(self) -> bool:
        """Announce a reload; send :meth:`ready` again once it completes.

        MONOTONIC_USEC is required by ``Type=notify-reload`` (systemd >= 253) to pair the
        reload with its READY=1, and is ignored by older versions and plain ``Type=notify``.
        """
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd for more time to start or stop (``EXTEND_TIMEOUT_USEC``)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
