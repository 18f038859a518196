"""The physical floor: ``redis-benchmark`` on the same private server.

A task needs at least: an enqueue (LPUSH), a claim (RPOP/BRPOP), a result
write (SET), and for a round trip the result read (GET); real systems also run
small scripts (EVAL). redis-benchmark measures each of these with:

- ``c1``:  1 connection, no pipelining (one sequential client or worker);
- ``c2``:  2 connections, no pipelining (our 2 worker processes);
- ``c1p16``: 1 connection, 16 commands per pipeline (a batched client).

Derived floors, for the table (simple models, stated so they can be checked):

- single enqueue: LPUSH ``c1`` ops/s;
- batched enqueue: LPUSH ``c1p16`` ops/s;
- throughput with 2 processes: ``c2`` ops/s of LPUSH, RPOP and SET (mean) / 3,
  as each task costs those 3 round trips;
- round-trip latency p50: 4 sequential round trips (enqueue, claim, write,
  read) at the ``c1`` p50 latency of those commands.
"""

from __future__ import annotations

import csv
import io
import subprocess
from typing import Any

from bench.registry import BenchError

TESTS = "lpush,rpop,set,get"
CONFIGS = {"c1": ("1", "1"), "c2": ("2", "1"), "c1p16": ("1", "16")}
SCRIPT = ("EVAL", "return redis.call('INCR', KEYS[1])", "1", "bench:floor:counter")


def _run(binary: str, host: str, port: int, requests: int, clients: str, pipeline: str, extra: list[str]) -> str:
    argv = [binary, "-h", host, "-p", str(port), "-n", str(requests), "-c", clients, "-P", pipeline, "--csv", *extra]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise BenchError(f"redis-benchmark failed (exit {result.returncode}): {result.stderr.strip()[:300]}")
    return result.stdout


def parse_csv(text: str) -> dict[str, dict[str, float]]:
    """redis-benchmark ``--csv`` output -> {test name: {rps, p50_ms, p99_ms}}."""
    rows: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        name = row.get("test")
        if not name or row.get("rps") is None:
            continue
        rows[name.split(" ")[0].upper()] = {
            "rps": float(row["rps"]),
            "p50_ms": float(row.get("p50_latency_ms") or "nan"),
            "p99_ms": float(row.get("p99_latency_ms") or "nan"),
        }
    return rows


def measure(binary: str, host: str, port: int, requests: int) -> dict[str, Any]:
    """Run every config; returns raw rows and the derived floors."""
    raw: dict[str, dict[str, dict[str, float]]] = {}
    for config, (clients, pipeline) in CONFIGS.items():
        rows = parse_csv(_run(binary, host, port, requests, clients, pipeline, ["-t", TESTS]))
        rows.update(parse_csv(_run(binary, host, port, requests, clients, pipeline, list(SCRIPT))))
        raw[config] = rows
    return {"requests": requests, "raw": raw, "derived": derive(raw)}


def derive(raw: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    try:
        c1, c2, c1p16 = raw["c1"], raw["c2"], raw["c1p16"]
        per_task = [c2["LPUSH"]["rps"], c2["RPOP"]["rps"], c2["SET"]["rps"]]
        trip_ms = [c1[name]["p50_ms"] for name in ("LPUSH", "RPOP", "SET", "GET")]
        return {
            "enqueue_single_per_s": c1["LPUSH"]["rps"],
            "enqueue_batch_per_s": c1p16["LPUSH"]["rps"],
            "throughput_per_s": sum(per_task) / len(per_task) / 3,
            "latency_p50_ms": sum(trip_ms),
        }
    except KeyError as exc:
        raise BenchError(f"redis-benchmark output lacks {exc}") from exc
