"""pynenc.forks.pid: the current pid without a system call, right in a forked child too."""

from __future__ import annotations

import os

from pynenc import forks


def test_the_pid_is_this_processes_and_a_forked_childs_own() -> None:
    assert forks.pid == os.getpid()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports what it sees, then leaves without running pytest's exit
        try:
            os.write(write_fd, f"{forks.pid} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    seen, actual = os.read(read_fd, 64).decode().split()
    os.close(read_fd)
    os.waitpid(child, 0)
    assert seen == actual == str(child)
    assert forks.pid == os.getpid()
