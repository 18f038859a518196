"""``python -m bench``: set up the peers, run the benchmark, write the report.

    python -m bench setup [--peers celery,rq]
    python -m bench run [--quick] [--peers celery,rq] [--no-pynenc] [--out DIR]
                        [--count N] [--repeats R] [--no-floor] [--fanout-timeout S]
    python -m bench publish DIR     # a run's table and chart into docs/benchmarks.md
    python -m bench script-cost [--tasks N] [--callgrind]   # Redis' cost of a busy call

``run`` creates missing peer virtualenvs first (as ``setup`` does), starts one
private redis-server, measures the redis-benchmark floor, runs every scenario
against pynenc and each chosen peer in rounds (every system once per round, in
a rotating order: see :mod:`bench.scenarios`), then prints the table and writes
results.json, table.md and chart.png into the results folder (default
``bench/results/<UTC timestamp>``). Exit code 0 when the report was written,
1 on a harness error, 2 on bad options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import floor as floor_mod
from bench import report
from bench.redis_server import BenchRedis
from bench.registry import BENCH_DIR, REPO_ROOT, BenchError, SystemSpec, select
from bench.scenarios import METRIC_KEYS, run_systems, sizes_for
from bench.setup_venvs import ensure, ensure_all


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="create the peers' virtualenvs under bench/.venvs")
    setup.add_argument("--peers", help="comma-separated peers (default: all)")
    run = sub.add_parser("run", help="run the benchmark and write the report")
    run.add_argument("--quick", action="store_true", help="small counts, finishes in under 2 minutes")
    run.add_argument("--peers", help="comma-separated peers (default: celery,dramatiq,huey,rq,arq)")
    run.add_argument("--no-pynenc", action="store_true", help="measure the peers only")
    run.add_argument("--out", type=Path, help="results folder (default bench/results/<UTC stamp>)")
    run.add_argument("--count", type=int, help="cap every task count (tiny smoke runs)")
    run.add_argument("--repeats", type=int, help="rounds: repeats of every scenario per system (default 3)")
    run.add_argument("--no-floor", action="store_true", help="skip the redis-benchmark floor")
    run.add_argument(
        "--fanout-timeout", type=float, help="seconds before a fan-out counts as a deadlock (quick 3, full 120)"
    )
    publish = sub.add_parser("publish", help="put a run's results into docs/benchmarks.md")
    publish.add_argument("results", type=Path, help="a results folder written by `run`")
    cost = sub.add_parser("script-cost", help="what Redis spends on a busy runner's script call (bench.script_cost)")
    cost.add_argument("--tasks", type=int, default=1000, help="busy calls to make (default 1000)")
    cost.add_argument("--callgrind", action="store_true", help="count redis-server's instructions (needs valgrind)")
    return parser.parse_args(argv)


DOC = REPO_ROOT / "docs" / "benchmarks.md"
DOC_CHART = REPO_ROOT / "docs" / "benchmarks-chart.png"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def publish(results: Path, doc: Path = DOC, doc_chart: Path = DOC_CHART) -> int:
    """Replace the results section of docs/benchmarks.md with a run's (never hand-written numbers)."""
    try:
        document = json.loads((results / report.JSON_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{results}: no readable {report.JSON_NAME} ({exc})") from exc
    text = doc.read_text()
    if START not in text or END not in text:
        raise BenchError(f"{doc} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    section = report.summary_markdown(document)
    doc.write_text(f"{head}{START}\n{section}\n![chart]({doc_chart.name})\n{END}{tail}")
    shutil.copyfile(results / report.CHART_NAME, doc_chart)
    print(f"[bench] {doc} and {doc_chart} updated from {results}")
    return 0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def not_measured(spec: SystemSpec, note: str) -> dict[str, Any]:
    """The result of a system that could not be set up: every metric noted, none measured."""
    return {
        "name": spec.name,
        "worker": spec.notes,
        "batch_api": None,
        "versions": [],
        "metrics": {},
        "notes": {key: note for key in METRIC_KEYS},
        "values": {},
        "raw": {},
        "seconds": 0.0,
    }


def run(args: argparse.Namespace) -> int:
    specs = select(args.peers, include_pynenc=not args.no_pynenc)
    if not specs:
        raise BenchError("nothing to measure: --no-pynenc with no peer")
    sizes = sizes_for(args.quick, args.count, args.repeats, args.fanout_timeout)
    started = dt.datetime.now(dt.UTC)
    out_dir: Path = args.out or BENCH_DIR / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    setup_errors: dict[str, str] = {}
    for spec in specs:
        try:
            ensure(spec)
        except BenchError as exc:  # that system is reported as not measured; the others run
            setup_errors[spec.name] = str(exc).splitlines()[0]
            print(f"[bench] {spec.name}: setup failed: {exc}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    with BenchRedis() as server:
        meta: dict[str, Any] = {
            "started": started.isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "machine": machine(),
            "redis_version": server.version(),
            "git_commit": git_commit(),
            "systems": [s.name for s in specs],
            # Other work on the machine skews every number: say how busy it was.
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        }
        print(f"[bench] redis-server {meta['redis_version']} on {server.url}; sizes {sizes.as_dict()}", flush=True)
        floor: dict[str, Any] | None = None
        if not args.no_floor:
            binary = shutil.which("redis-benchmark")
            if binary is None:
                floor = {"error": "redis-benchmark not on PATH"}
            else:
                requests = 3000 if args.quick else 50000
                floor = floor_mod.measure(binary, "127.0.0.1", server.port, requests)
            print(f"[bench] redis floor: {floor.get('derived') or floor}", flush=True)
        measured = run_systems([s for s in specs if s.name not in setup_errors], server.url, sizes, out_dir / "logs")
        systems: dict[str, dict[str, Any]] = {
            spec.name: measured[spec.name]
            if spec.name in measured
            else not_measured(spec, f"error: setup failed: {setup_errors[spec.name]}")
            for spec in specs
        }
    meta["seconds"] = round(time.monotonic() - t0, 1)
    meta["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    document = report.build(meta, sizes.as_dict(), systems, floor)
    paths = report.write(document, out_dir)
    print()
    print(document["table"])
    print(f"[bench] {meta['seconds']}s; wrote {paths['json']}, {paths['table']}, {paths['chart']}")
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM ends the run as Ctrl-C does: the worker pools and the redis-server are stopped
    by the ``finally`` blocks that started them (Python's default would skip them)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if args.command == "setup":
            ensure_all(select(args.peers, include_pynenc=False))
            print("[setup] virtualenvs ready under bench/.venvs")
            return 0
        if args.command == "publish":
            return publish(args.results)
        if args.command == "script-cost":
            from bench.script_cost import measure

            print("\n".join(measure(args.tasks, args.callgrind).lines()))
            return 0
        return run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
