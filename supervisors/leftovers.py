"""Leftovers of supervisors that were killed: their slot tables and lock files.

Both are named after their creator's pid; a new supervisor removes those whose pid is gone
(:func:`sweep_stale`) before it creates its own.
"""

from __future__ import annotations

import os
import tempfile

from pynenc.supervisors.permits import LOCK_PREFIX


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale(shm_dir: str = "/dev/shm", lock_dir: str | None = None) -> list[str]:
    """Remove slot tables and lock files left by supervisors that were killed; return what went.

    Both are named after their creator's pid; only those whose pid is gone are removed
    (orphaned runners that still use them keep their mappings and open files).
    """
    removed = []
    candidates = [(shm_dir, "pynenc_slots_", "_"), (lock_dir or tempfile.gettempdir(), LOCK_PREFIX, "-")]
    for directory, prefix, separator in candidates:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.startswith(prefix):
                continue
            pid_text = name[len(prefix) :].split(separator, 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed
