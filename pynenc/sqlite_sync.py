"""Coordination of the processes of one host around one SQLite file.

SQLite itself only offers a busy lock that makes writers sleep and retry, and no
way to tell another process "something changed". This module adds, per file:

* :class:`WriterLock`: writers queue on an exclusive ``flock`` of ``<file>.lock``,
  so the next writer wakes the moment the previous one commits.
* :class:`Signal`: counters of "something became final" / "work was queued",
  bumped after each commit; threads of this process wait on its condition.
* :class:`Doorbell`: the same bumps carried to the other processes of the host.
  A process that waits binds an abstract-namespace datagram socket (Linux) and
  leaves a marker file named by its pid in ``<file>.wake/``; after a commit a
  writer sends one byte to every marked process, whose listener thread bumps
  its Signal. Where this cannot work (no abstract sockets, read-only folder,
  another network namespace) waiters fall back on their backoff polling.
* :data:`GATE`-based fork safety: SQLite connections must not be open across
  ``fork()`` (the child inherits lock bookkeeping without the locks and can
  corrupt the file). Store operations hold the gate shared; before a fork it is
  taken exclusively, every connection of the process is closed (threads reopen
  theirs on next use), and the child starts with fresh state.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import socket
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class Signal:
    """In-process wake-ups: counters bumped after commits, a condition to wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.final = 0
        self.work = 0

    def count(self, kind: str) -> int:
        return self.final if kind == "final" else self.work

    def sleep(self, kind: str, seen: int, timeout: float) -> bool:
        """Sleep up to ``timeout``; True when the ``kind`` counter moved past ``seen`` meanwhile."""
        with self.cond:
            return self.cond.wait_for(lambda: self.count(kind) != seen, timeout)

    def bump(self, final: bool, work: bool) -> None:
        if not (final or work):
            return
        with self.cond:
            self.final += final
            self.work += work
            self.cond.notify_all()


class WriterLock:
    """Queues this host's writers of one file in the kernel rather than in SQLite's sleep-and-retry.

    A thread lock comes first because flock does not separate threads of one process. The
    kernel drops the flock of a process that dies. SQLite's own lock still guards the data
    (e.g. when the lock file cannot be created).
    """

    def __init__(self, path: str) -> None:
        self.path = f"{path}.lock"
        self.thread_lock = threading.Lock()
        self.fd: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.thread_lock:
            if self.fd is None:
                try:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                except OSError:
                    self.fd = -1  # e.g. a read-only folder: SQLite's lock alone
            if self.fd < 0:
                yield
                return
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


class Doorbell:
    """Wakes waiters in other processes of this host after a commit (see the module doc)."""

    def __init__(self, path: str, signal: Signal) -> None:
        self.folder = Path(f"{path}.wake")
        self.tag = hashlib.sha1(path.encode()).hexdigest()[:16]
        self.signal = signal
        self.pid = os.getpid()
        self.listener: socket.socket | None = None
        self.sender: socket.socket | None = None
        self.enabled = sys.platform.startswith("linux")
        self.lock = threading.Lock()

    def _address(self, pid: int | str) -> bytes:
        return f"\0pynenc-wake-{self.tag}-{pid}".encode()

    def listen(self) -> None:
        """Start receiving rings in this process (idempotent)."""
        with self.lock:
            if self.listener is not None or not self.enabled:
                return
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                listener.bind(self._address(self.pid))
                self.folder.mkdir(exist_ok=True)
                (self.folder / str(self.pid)).touch()  # after bind: a marker always has a listener
            except OSError:  # no abstract sockets, or a read-only folder: waiters poll
                listener.close()
                self.enabled = False
                return
            self.listener = listener
        threading.Thread(target=self._receive, args=(listener,), name="pynenc-sqlite-doorbell", daemon=True).start()

    def _receive(self, listener: socket.socket) -> None:
        while True:
            try:
                data = listener.recv(64)
                # a burst of commits wakes the waiters once
                listener.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    while len(data) < 4096:
                        data += listener.recv(64)
                listener.setblocking(True)
            except OSError:
                return  # closed
            self.signal.bump(b"f" in data, b"w" in data)

    def ring(self, final: bool, work: bool) -> None:
        """Tell every other listening process that something changed (best effort, never blocks)."""
        if not self.enabled or not (final or work):
            return
        try:
            pids = os.listdir(self.folder)
        except OSError:
            return
        message = (b"f" if final else b"") + (b"w" if work else b"")
        with self.lock:
            if self.sender is None:
                self.sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.sender.setblocking(False)
            sender = self.sender
        own = str(self.pid)
        for pid in pids:
            if pid == own:
                continue
            try:
                sender.sendto(message, self._address(pid))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):  # nobody listens there any more
                    (self.folder / pid).unlink()
            except OSError:
                pass  # its queue is full: it has wake-ups pending already

    def close(self) -> None:
        with self.lock:
            for sock in (self.listener, self.sender):
                if sock is not None:
                    sock.close()
            self.listener = self.sender = None
        if self.pid == os.getpid():
            with contextlib.suppress(OSError):
                (self.folder / str(self.pid)).unlink()


class Gate:
    """Store operations pass it shared; fork and ``close()`` take it exclusively."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.exclusive = False
        self.local = threading.local()

    def enter(self) -> None:
        depth: int = getattr(self.local, "depth", 0)
        if depth == 0:
            with self.cond:
                self.cond.wait_for(lambda: not self.exclusive)
                self.active += 1
        self.local.depth = depth + 1

    def leave(self) -> None:
        self.local.depth -= 1
        if self.local.depth == 0:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def acquire_exclusive(self) -> bool:
        """Wait until no operation runs and block new ones; False if this thread is inside one."""
        if getattr(self.local, "depth", 0):
            return False
        with self.cond:
            self.cond.wait_for(lambda: not self.exclusive)
            self.exclusive = True
            self.cond.wait_for(lambda: self.active == 0)
        return True

    def release_exclusive(self) -> None:
        with self.cond:
            self.exclusive = False
            self.cond.notify_all()


class Closable(Protocol):
    def close(self) -> None: ...


class _Host:
    """This process's per-file objects; replaced wholesale in a forked child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signals: dict[str, Signal] = {}
        self.writer_locks: dict[str, WriterLock] = {}
        self.doorbells: dict[str, Doorbell] = {}
        self.gate = Gate()
        #: every open connection holder of this process, closed before a fork
        self.connections: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.forking = False
        #: held while a store's per-process helper (its final watcher) is created
        self.setup_lock = threading.Lock()


_host = _Host()


def gate() -> Gate:
    return _host.gate


def setup_lock() -> threading.Lock:
    """This process's lock for creating per-process helpers (a forked child gets its own,
    never one a parent thread held at the fork)."""
    return _host.setup_lock


def register_connection(holder: Closable) -> None:
    _host.connections.add(holder)


def signal_for(path: str) -> Signal:
    with _host.lock:
        signal = _host.signals.get(path)
        if signal is None:
            signal = _host.signals[path] = Signal()
        return signal


def writer_lock_for(path: str) -> WriterLock:
    with _host.lock:
        lock = _host.writer_locks.get(path)
        if lock is None:
            lock = _host.writer_locks[path] = WriterLock(path)
        return lock


def doorbell_for(path: str) -> Doorbell:
    signal = signal_for(path)
    with _host.lock:
        bell = _host.doorbells.get(path)
        if bell is None:
            bell = _host.doorbells[path] = Doorbell(path, signal)
        return bell


def committed(path: str, final: bool, work: bool) -> None:
    """After a commit: wake the waiters of this process and of the other processes of the host."""
    if final or work:
        # Other processes first: ringing makes system calls that let other threads of this
        # process run, and a thread of ours that just registered work usually goes on to wait
        # for it; woken last, our runner threads find that wait already recorded (the order
        # the in-memory backend has), instead of racing it to claim the new work.
        doorbell_for(path).ring(final, work)
        signal_for(path).bump(final, work)


def _before_fork() -> None:
    host = _host
    host.forking = host.gate.acquire_exclusive()
    if host.forking:
        for holder in list(host.connections):
            holder.close()


def _after_fork_in_parent() -> None:
    if _host.forking:
        _host.forking = False
        _host.gate.release_exclusive()


def _after_fork_in_child() -> None:
    global _host
    inherited = _host
    _host = _Host()
    # Close our copies of the parent's sockets and lock file (the parent keeps its own): a
    # child holding the parent's listener would keep its address alive after the parent died.
    for bell in inherited.doorbells.values():
        for sock in (bell.listener, bell.sender):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
    for lock in inherited.writer_locks.values():
        if lock.fd is not None and lock.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(lock.fd)


def _close_doorbells() -> None:
    """At exit: remove this process's wake-up markers (ringers also drop those of dead processes)."""
    for bell in list(_host.doorbells.values()):
        bell.close()


atexit.register(_close_doorbells)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
