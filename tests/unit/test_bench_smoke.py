"""Smoke test: ``python -m bench run --quick`` on a tiny count produces a sane report.

The pynenc-only run takes ~20-30 s on a 2-core machine (a redis-server, the
redis-benchmark floor, a pynenc-supervisor with 2 processes) and runs in CI.
The run with a peer needs that peer's virtualenv, installed from PyPI on first
use, so it runs only with ``PYNENC_BENCH=1``. No timed assertions: only that
the report is written and its numbers are positive and consistent.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_DEADLINE = 600  # seconds; a hang fails the test instead of blocking the suite

REQUIRED = (
    "enqueue_single_per_s",
    "enqueue_batch_per_s",
    "throughput_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "redis_cpu_us_per_task",
    "worker_cpu_us_per_task",
    "client_cpu_us_per_task",
)


def run_bench(out: Path, peers: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--quick",
            "--count",
            "8",
            "--peers",
            peers,
            "--out",
            str(out),
            # A deadline, not a speed: a loaded CI machine must not turn a slow fan-out into a "deadlock".
            "--fanout-timeout",
            "120",
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "results.json").read_text())


def check_system(document: dict[str, Any], name: str) -> None:
    system = document["systems"][name]
    metrics = system["metrics"]
    for key in REQUIRED:
        assert key in metrics, f"{name} has no {key}: notes {system['notes']}"
    for key, summary in metrics.items():
        assert summary["n"] >= 1, key
        assert 0 <= summary["min"] <= summary["median"] <= summary["max"], (key, summary)
    assert metrics["latency_p50_ms"]["median"] <= metrics["latency_p99_ms"]["median"]
    assert "idle_cpu_percent" in metrics and "pss_per_worker_mb" in metrics
    assert metrics["pss_per_worker_mb"]["median"] > 0
    fanout = metrics.get("fanout_parents_per_s")
    note = system["notes"].get("fanout_parents_per_s", "")
    assert fanout is not None or note.startswith(("deadlock", "failed")), note


def test_quick_run_for_pynenc_writes_a_sane_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc, document = run_bench(out, "pynenc")
    assert list(document["systems"]) == ["pynenc"]
    assert document["meta"]["mode"] == "quick"
    assert document["sizes"]["drain_n"] == 8
    check_system(document, "pynenc")
    # pynenc waits inside tasks without deadlock: the fan-out must complete.
    assert "fanout_parents_per_s" in document["systems"]["pynenc"]["metrics"], document["systems"]["pynenc"]["notes"]
    derived = document["floor"]["derived"]
    assert all(derived[k] > 0 for k in ("enqueue_single_per_s", "throughput_per_s", "latency_p50_ms"))
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert document["table"] in proc.stdout
    assert (out / "logs" / "pynenc-workers.log").is_file()


@pytest.mark.skipif(os.environ.get("PYNENC_BENCH") != "1", reason="needs a peer venv from PyPI: set PYNENC_BENCH=1")
def test_quick_run_with_a_peer_reports_ratios(tmp_path: Path) -> None:
    _, document = run_bench(tmp_path / "results", "huey")
    assert list(document["systems"]) == ["pynenc", "huey"]
    check_system(document, "huey")
    assert document["ratios"]["huey"]["throughput_per_s"] > 0
    assert any(line.startswith("huey==") for line in document["systems"]["huey"]["versions"])


def _lines_until(proc: subprocess.Popen[str], wanted: str, deadline: float) -> list[str]:
    """The run's output lines up to the first containing ``wanted`` (fail at the deadline)."""
    assert proc.stdout is not None
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if wanted in line:
            return seen
    raise AssertionError(f"{wanted!r} never printed:\n{''.join(seen)[-3000:]}")


def test_sigterm_ends_a_run_with_its_workers_and_redis_server_stopped(tmp_path: Path) -> None:
    # A run stopped by SIGTERM (a CI timeout, systemd, kill) must not leave a worker pool or
    # its private redis-server behind.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--quick", "--count", "8", "--peers", "pynenc", "--no-floor",
         "--out", str(tmp_path / "results")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    workers: list[psutil.Process] = []
    servers: list[psutil.Process] = []
    try:
        lines = _lines_until(proc, "workers started and warm", time.monotonic() + RUN_DEADLINE)
        [url] = [line.split(" on ")[1].split(";")[0] for line in lines if "redis-server" in line and " on " in line]
        port = url.rsplit(":", 1)[1].split("/")[0]
        # process_iter fills p.info, with None for what may not be read (another user's process)
        running = list(psutil.process_iter(["name", "cmdline", "environ"]))
        workers = [p for p in running if (p.info["environ"] or {}).get("BENCH_REDIS_URL") == url]
        servers = [p for p in running if "redis-server" in (p.info["name"] or "") and _port_of(p) == port]
        assert workers and servers, "the run's workers and redis-server were not found"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(workers + servers, timeout=30)
        assert not alive, f"left running after SIGTERM: {[(p.pid, p.info['cmdline']) for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for leftover in workers + servers:  # what a failed run left behind
            try:
                leftover.kill()
            except psutil.Error:
                pass


def _port_of(process: psutil.Process) -> str | None:
    # redis-server rewrites its title to "redis-server 127.0.0.1:<port>" (its argv is gone)
    for word in " ".join(process.info["cmdline"] or []).split():
        if ":" in word:
            return word.rsplit(":", 1)[1]
    return None
