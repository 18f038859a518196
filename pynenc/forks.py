"""The pid of this process, read without a system call.

Objects that must not be used across ``fork`` (sockets, locks, cached clients and
components) compare the pid they were made in with the current one on each use.
``os.getpid()`` is a system call (glibc stopped caching it), and the hot path of a runner
paid it several times per invocation; the fork hook below keeps :data:`pid` current
instead. Every fork made from Python (``os.fork``, multiprocessing) runs the hook, and
it runs before the hooks of the modules that import this one.
"""

from __future__ import annotations

import os

#: the pid of the running process (updated in a forked child before any other fork hook
#: of pynenc runs)
pid = os.getpid()


def _after_fork_in_child() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
