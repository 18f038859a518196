"""Subprocesses of the harness: a system's worker pool and its measuring client.

Both run with the repository root on ``PYTHONPATH`` (so ``bench.peers.*``
imports in any venv) and ``BENCH_REDIS_URL`` set. Every process is started in
a session of its own, so stopping it signals its whole process group (the
pool's forked children too) and nothing else.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import psutil

from bench.registry import REDIS_URL_ENV, REPO_ROOT, BenchError, SystemSpec

STOP_TIMEOUT = 15.0
# Workers get this long to exit on SIGTERM before their group is SIGKILLed. Not a
# measure: the results are in by then; the JSON says whether a kill was needed.
WORKER_STOP_GRACE = 5.0
MARKER = "@@BENCH "


def system_env(spec: SystemSpec, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    previous = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + previous if previous else "")
    env[REDIS_URL_ENV] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(spec.extra_env)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _stop_group(proc: subprocess.Popen[Any], deadline: float) -> bool:
    """SIGTERM the process group of ``proc`` (its own session), SIGKILL after the deadline.

    Returns True when ``proc`` exited on SIGTERM alone.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    clean = True
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        clean = False
    # Forked children may outlive their parent: the group goes in any case.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=STOP_TIMEOUT)
    return clean


class WorkerPool:
    """The worker command(s) of one system, started as real subprocesses."""

    def __init__(self, spec: SystemSpec, redis_url: str, log_path: Path) -> None:
        self.spec = spec
        self.redis_url = redis_url
        self.log_path = log_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        commands = self.spec.worker_argv(self.spec.bin_dir(), self.redis_url)
        missing = [argv[0] for argv in commands if not Path(argv[0]).exists()]
        if missing:
            raise BenchError(f"{self.spec.name}: worker command not found: {', '.join(missing)}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = system_env(self.spec, self.redis_url)
        with open(self.log_path, "ab") as log:
            for argv in commands:
                log.write(f"\n=== {' '.join(argv)} ===\n".encode())
                log.flush()
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=REPO_ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.spec.name}: worker exited with code {proc.returncode}; log tail:\n{_tail(self.log_path)}"
                )

    def tree(self) -> list[psutil.Process]:
        """Every live process of the pool (the started ones and their descendants)."""
        found: dict[int, psutil.Process] = {}
        for proc in self.procs:
            try:
                top = psutil.Process(proc.pid)
                found[top.pid] = top
                for child in top.children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self, grace: float = WORKER_STOP_GRACE) -> dict[str, Any]:
        """Stop every worker; how long it took and whether SIGKILL was needed.

        ``grace=0`` kills at once (a deadlocked pool would only wait out the grace).
        """
        started = time.monotonic()
        deadline = started + grace
        clean = [_stop_group(proc, deadline) for proc in self.procs]
        self.procs = []
        return {"seconds": round(time.monotonic() - started, 2), "killed": not all(clean)}


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user + system, with reaped children's) of each process still alive."""
    out: dict[int, float] = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`cpu_seconds` readings by the processes in both."""
    return sum(after[pid] - before[pid] for pid in after if pid in before)


def idle_cost(pool: WorkerPool, window: float) -> dict[str, Any]:
    """CPU used by the whole pool over ``window`` seconds of idleness, and its PSS.

    The window is the measurement itself (CPU seconds accrued during it), not a
    synchronisation delay. CPU is summed over the processes alive at both ends.
    PSS (proportional set size) shares pages between forked processes fairly,
    so the pool's total PSS divided by its 2 worker processes is comparable
    across prefork, spawn and independent-process designs.
    """

    pool.check_alive()
    procs = pool.tree()
    before = cpu_seconds(procs)
    start = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - start
    used = cpu_used(before, cpu_seconds(procs))
    pss: dict[int, int] = {}
    for p in pool.tree():
        try:
            pss[p.pid] = int(p.memory_full_info().pss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    total = sum(pss.values())
    return {
        "cpu_percent": 100.0 * used / elapsed,
        "window_s": elapsed,
        "processes": len(pss),
        "pss_total_mb": total / 2**20,
        "pss_per_worker_mb": total / 2 / 2**20,
        "pss_each_mb": sorted(round(v / 2**20, 1) for v in pss.values()),
    }


class Client:
    """The measuring client of one system (``python -m bench.client``) in its venv."""

    def __init__(self, spec: SystemSpec, redis_url: str, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(spec.python()), "-m", "bench.client", spec.module],
            cwd=REPO_ROOT,
            env=system_env(spec, redis_url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""

    def request(self, op: str, wait: float, **args: Any) -> dict[str, Any]:
        """Send one request and wait up to ``wait`` seconds for its answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + wait
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(MARKER):
                    answer: dict[str, Any] = json.loads(text[len(MARKER) :])
                    return answer
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.spec.name}: client gave no answer to {op!r} within {wait:.0f}s")
            for _key, _ in self._selector.select(min(left, 1.0)):
                try:
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    # End of output: the client died (import error, crash...).
                    self.proc.wait(timeout=STOP_TIMEOUT)
                    raise BenchError(
                        f"{self.spec.name}: client closed its output (exit {self.proc.returncode}); log tail:\n"
                        f"{_tail(self.log_path)}"
                    )
                self._buffer += chunk

    def cpu_seconds(self) -> float:
        """CPU seconds the client process has used so far (0 once it has exited)."""
        try:
            return sum(cpu_seconds([psutil.Process(self.proc.pid)]).values())
        except psutil.NoSuchProcess:
            return 0.0

    def close(self) -> None:
        try:
            if self.proc.stdin is not None and self.proc.poll() is None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            pass
        _stop_group(self.proc, time.monotonic() + 5)
        self._selector.close()
        self._log.close()
