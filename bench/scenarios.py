"""The scenarios, run against one system at a time on the shared private Redis.

Order for each system (Redis flushed before and after):

1. enqueue rate, no worker running: ``n`` single calls, then ``n`` through the
   system's batch API where it has one;
2. workers started (2 processes), warmed up by a drain of ``warmup`` tasks;
3. round-trip latency: ``latency_n`` sequential calls through the result API;
4. end-to-end throughput: ``drain_n`` no-op tasks enqueued (batch API where
   there is one) and drained; from the first enqueue to the last task's record;
   meanwhile the CPU used by redis-server, the worker pool and the client, per task;
5. idle cost: CPU of the whole pool over ``idle_window`` seconds, PSS per worker;
6. fan-out/fan-in: ``parents`` tasks each waiting on ``children`` children
   inside the task, with a deadline; a system that refuses (error recorded by
   the parent) or deadlocks (deadline passed) is reported as such, once.

A run goes in ``repeats`` rounds; in each round every system, in turn, starts
its pool and runs every scenario once (the order of the systems rotates from
one round to the next). So each system's repeats are spread over the whole run,
and the machine's drift (other tenants, clock speed) reaches every system alike
instead of favouring whoever ran in a quiet minute. A failure is recorded as a
note for that metric and the run goes on with the next scenario; a fan-out found
deadlocked or failing is not tried again in later rounds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import redis

from bench import stats
from bench.metrics import METRICS
from bench.processes import WORKER_STOP_GRACE, Client, WorkerPool, cpu_seconds, cpu_used, idle_cost
from bench.redis_server import redis_cpu_seconds
from bench.registry import BenchError, SystemSpec
from bench.setup_venvs import freeze

MARGIN = 30.0  # extra seconds the harness gives a client beyond the scenario's own deadline
WARM_CALLS = 20  # unmeasured enqueues before the enqueue scenario
CALL_TIMEOUT = 10.0  # deadline of one round trip in the latency scenario


@dataclass(frozen=True)
class Sizes:
    repeats: int = 3
    enqueue_n: int = 5000
    drain_n: int = 20000
    latency_n: int = 500
    fanout_parents: int = 200
    fanout_children: int = 5
    fanout_timeout: float = 120.0
    idle_window: float = 10.0
    warmup_n: int = 200
    drain_timeout: float = 1800.0
    startup_timeout: float = 90.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes()
# Small enough for all six systems in under 2 minutes on 2 cores; the slowest
# peers set the pace (RQ forks a process per job, arq polls its queue every 0.5 s).
QUICK = Sizes(
    enqueue_n=200,
    drain_n=100,
    latency_n=10,
    fanout_parents=20,
    fanout_timeout=3.0,
    idle_window=0.5,
    warmup_n=10,
    drain_timeout=60.0,
)


def sizes_for(
    quick: bool, count: int | None = None, repeats: int | None = None, fanout_timeout: float | None = None
) -> Sizes:
    """Sizes for a run; ``count`` caps every task count (tiny smoke runs)."""
    sizes = QUICK if quick else FULL
    if fanout_timeout is not None:
        if not fanout_timeout > 0:
            raise BenchError(f"--fanout-timeout must be positive, got {fanout_timeout}")
        sizes = replace(sizes, fanout_timeout=fanout_timeout)
    if repeats is not None:
        if repeats < 1:
            raise BenchError(f"--repeats must be at least 1, got {repeats}")
        sizes = replace(sizes, repeats=repeats)
    if count is not None:
        if count < 2:
            raise BenchError(f"--count must be at least 2, got {count}")
        sizes = replace(
            sizes,
            enqueue_n=min(sizes.enqueue_n, count),
            drain_n=min(sizes.drain_n, count),
            latency_n=min(sizes.latency_n, count),
            fanout_parents=min(sizes.fanout_parents, count),
            warmup_n=min(sizes.warmup_n, count),
        )
    return sizes


def flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds used so far by redis-server, by each worker process, by the client."""

    redis: float
    workers: dict[int, float]
    client: float


class SystemRun:
    """Runs every scenario of one system, once per call of :meth:`run` (one round), and
    collects the values of every round."""

    def __init__(self, spec: SystemSpec, redis_url: str, sizes: Sizes, log_dir: Path) -> None:
        self.spec = spec
        self.redis_url = redis_url
        self.sizes = sizes
        self.log_dir = log_dir
        self.values: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}
        self.raw: dict[str, Any] = {}
        self.batch_api: str | None = None
        self.started = time.monotonic()
        #: seconds spent in this system's rounds
        self.seconds = 0.0
        #: this round's fan-out was left deadlocked (its workers are killed, not stopped)
        self.deadlocked = False

    # -- bookkeeping --------------------------------------------------------- #

    def add(self, metric: str, value: float) -> None:
        self.values.setdefault(metric, []).append(value)

    def note(self, metric: str, text: str) -> None:
        self.notes.setdefault(metric, " ".join(text.split()))  # one line, for the table

    def log(self, text: str) -> None:
        print(f"[{self.spec.name} +{time.monotonic() - self.started:.1f}s] {text}", flush=True)

    def ask(self, client: Client, op: str, deadline: float, **args: Any) -> dict[str, Any]:
        """One client request; ``deadline`` is the scenario's own, the harness adds a margin."""
        answer = client.request(op, deadline + MARGIN, **args)
        if "error" in answer:
            raise BenchError(f"{op}: {answer['error']}")
        return answer

    # -- the run --------------------------------------------------------------- #

    def run(self) -> None:
        """One round: a fresh pool, each scenario once (the rounds are the repeats)."""
        round_started = time.monotonic()
        self.deadlocked = False
        try:
            self._round()
        finally:
            self.seconds += time.monotonic() - round_started

    def _round(self) -> None:
        flush(self.redis_url)
        client = Client(self.spec, self.redis_url, self.log_dir / f"{self.spec.name}-client.log")
        pool: WorkerPool | None = None
        try:
            self.batch_api = self.ask(client, "ping", self.sizes.startup_timeout).get("batch_api")
            self.enqueue(client)
            flush(self.redis_url)
            pool = WorkerPool(self.spec, self.redis_url, self.log_dir / f"{self.spec.name}-workers.log")
            pool.start()
            self.warmup(client, pool)
            self.log("workers started and warm")
            self.guard("latency_p50_ms", lambda: self.latency(client, pool))
            self.guard("throughput_per_s", lambda: self.drain(client, pool))
            self.guard("idle_cpu_percent", lambda: self.idle(pool))
            if "fanout_parents_per_s" not in self.notes:  # deadlocked or failed: said once
                self.guard("fanout_parents_per_s", lambda: self.fanout(client, pool))
        except Exception as exc:  # noqa: BLE001 - one system's failure must not end the run
            self.log(f"aborted: {type(exc).__name__}: {exc}")
            for metric in METRIC_KEYS:
                if metric not in self.values:
                    self.note(metric, f"error: {_first_line(exc)}")
        finally:
            if pool is not None:
                stopped = pool.stop(grace=0.0 if self.deadlocked else WORKER_STOP_GRACE)
                self.raw.setdefault("stop", []).append(stopped)
                if stopped["killed"] and not self.deadlocked:
                    self.log(f"workers ignored SIGTERM for {stopped['seconds']}s: SIGKILLed")
            client.close()
            flush(self.redis_url)
            self.log("stopped")

    def guard(self, metric: str, scenario: Any) -> None:
        try:
            scenario()
        except BenchError as exc:
            self.log(f"{metric}: {exc}")
            self.note(metric, f"error: {_first_line(exc)}")

    def enqueue(self, client: Client) -> None:
        n = self.sizes.enqueue_n
        # Unmeasured first calls: connections, lazy imports and caches of the client.
        for mode in ("single", "batch"):
            self.ask(client, "enqueue", self.sizes.drain_timeout, mode=mode, n=min(n, WARM_CALLS))
        flush(self.redis_url)
        for mode in ("single", "batch"):
            answer = self.ask(client, "enqueue", self.sizes.drain_timeout, mode=mode, n=n)
            if "unsupported" in answer:
                self.note(f"enqueue_{mode}_per_s", f"unsupported: {answer['unsupported']}")
                continue
            self.add(f"enqueue_{mode}_per_s", stats.rate(n, answer["seconds"]))
        flush(self.redis_url)
        self.log("enqueue done")

    def warmup(self, client: Client, pool: WorkerPool) -> None:
        deadline = self.sizes.startup_timeout
        answer = self.ask(client, "drain", deadline, n=self.sizes.warmup_n, timeout=deadline, mode="single")
        pool.check_alive()
        if answer["done"] < self.sizes.warmup_n:
            raise BenchError(
                f"workers finished {answer['done']}/{self.sizes.warmup_n} warm-up tasks within {deadline:.0f}s"
            )

    def latency(self, client: Client, pool: WorkerPool) -> None:
        n = self.sizes.latency_n
        pool.check_alive()
        answer = self.ask(client, "latency", n * CALL_TIMEOUT, n=n, timeout=CALL_TIMEOUT)
        roundtrip = answer["roundtrip"]
        self.add("latency_p50_ms", 1000 * stats.percentile(roundtrip, 50))
        self.add("latency_p99_ms", 1000 * stats.percentile(roundtrip, 99))
        if answer["dispatch"]:
            self.add("dispatch_p50_ms", 1000 * stats.percentile(answer["dispatch"], 50))
        self.log(f"latency done: p50 {self.values['latency_p50_ms']} ms")

    def drain(self, client: Client, pool: WorkerPool) -> None:
        n = self.sizes.drain_n
        pool.check_alive()
        cpu_before = self.cpu_reading(client, pool)
        answer = self.ask(client, "drain", self.sizes.drain_timeout, n=n, timeout=self.sizes.drain_timeout)
        self.add_cpu_per_task(cpu_before, self.cpu_reading(client, pool), n)
        if answer["done"] < n:
            raise BenchError(f"{answer['done']}/{n} tasks done within {self.sizes.drain_timeout:.0f}s")
        self.add("throughput_per_s", stats.rate(n, answer["last"] - answer["t0"]))
        if n > 1 and answer["last"] > answer["first"]:
            self.add("drain_per_s", stats.rate(n - 1, answer["last"] - answer["first"]))
        self.log(f"throughput done: {[round(v) for v in self.values['throughput_per_s']]} tasks/s")

    def cpu_reading(self, client: Client, pool: WorkerPool) -> CpuReading:
        return CpuReading(redis_cpu_seconds(self.redis_url), cpu_seconds(pool.tree()), client.cpu_seconds())

    def add_cpu_per_task(self, before: CpuReading, after: CpuReading, n: int) -> None:
        """Where one drained task's CPU went: redis-server, the worker pool, the client (its
        enqueue and its wait, which polls LLEN every 5 ms), in microseconds per task."""
        self.add("redis_cpu_us_per_task", 1e6 * (after.redis - before.redis) / n)
        self.add("worker_cpu_us_per_task", 1e6 * cpu_used(before.workers, after.workers) / n)
        self.add("client_cpu_us_per_task", 1e6 * (after.client - before.client) / n)

    def idle(self, pool: WorkerPool) -> None:
        sample = idle_cost(pool, self.sizes.idle_window)
        self.add("idle_cpu_percent", sample["cpu_percent"])
        self.add("pss_per_worker_mb", sample["pss_per_worker_mb"])
        self.raw.setdefault("idle", []).append(sample)
        self.log(f"idle done: {[round(v, 2) for v in self.values['idle_cpu_percent']]} % of a core")

    def fanout(self, client: Client, pool: WorkerPool) -> None:
        parents, children = self.sizes.fanout_parents, self.sizes.fanout_children
        timeout = self.sizes.fanout_timeout
        pool.check_alive()
        answer = self.ask(client, "fanout", timeout, parents=parents, children=children, timeout=timeout)
        self.raw.setdefault("fanout", []).append(answer)
        if answer["timed_out"]:
            self.deadlocked = True
            failed = f"; {answer['error_count']} failed with {answer['errors'][0]}" if answer["errors"] else ""
            self.note(
                "fanout_parents_per_s",
                f"deadlock: {answer['done']}/{parents} parents and {answer['children_done']}/"
                f"{parents * children} children done after {timeout:.0f}s{failed}",
            )
        elif answer["error_count"]:
            self.note(
                "fanout_parents_per_s",
                f"failed: {answer['error_count']}/{parents} parents failed with {answer['errors'][0]}",
            )
        else:
            self.add("fanout_parents_per_s", stats.rate(parents, answer["last"] - answer["t0"]))
        self.log(f"fan-out done: {self.values.get('fanout_parents_per_s') or self.notes.get('fanout_parents_per_s')}")

    def result(self) -> dict[str, Any]:
        metrics = {key: stats.summarize(values).as_dict() for key, values in self.values.items() if values}
        return {
            "name": self.spec.name,
            "worker": self.spec.notes,
            "batch_api": self.batch_api,
            "versions": freeze(self.spec),
            "metrics": metrics,
            # Kept beside a number too: a fan-out that deadlocks on its 2nd repeat must say so.
            "notes": dict(self.notes),
            "values": self.values,
            "raw": self.raw,
            "seconds": self.seconds,
        }


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


# Every metric a system can report, in table order (labels and units: bench.metrics).
METRIC_KEYS = tuple(metric.key for metric in METRICS)


def round_order(specs: list[SystemSpec], round_index: int) -> list[SystemSpec]:
    """The systems in the order of round ``round_index`` (from 0): rotated by one each round,
    so over ``len(specs)`` rounds every system runs once in every position."""
    if not specs:
        return []
    shift = round_index % len(specs)
    return specs[shift:] + specs[:shift]


def run_systems(specs: list[SystemSpec], redis_url: str, sizes: Sizes, log_dir: Path) -> dict[str, dict[str, Any]]:
    """Every system in ``sizes.repeats`` rounds (see the module's docstring); results by name."""
    runs = {spec.name: SystemRun(spec, redis_url, sizes, log_dir) for spec in specs}
    for round_index in range(sizes.repeats):
        for spec in round_order(specs, round_index):
            print(f"[bench] --- round {round_index + 1}/{sizes.repeats}: {spec.name} ({spec.notes}) ---", flush=True)
            runs[spec.name].run()
    return {name: system_run.result() for name, system_run in runs.items()}
