"""The measuring client: ``python -m bench.client <module>`` in a system's own venv.

It loads ``<module>.Adapter`` (the system's own enqueue and result APIs) and
serves one JSON request per stdin line; each answer is one stdout line starting
with ``@@BENCH `` (other output of the libraries is ignored by the harness).

Requests (``op`` plus arguments) and answers:

- ``ping`` -> ``{"batch_api": str | None}``
- ``enqueue {mode: single|batch, n}`` -> ``{"seconds"}`` for enqueueing n no-op tasks
- ``drain {n, timeout, mode}`` -> enqueue n no-op tasks, wait until the tasks have
  recorded n completions; ``{"t0", "enqueued", "first", "last", "done"}`` (wall clock)
- ``latency {n, timeout}`` -> n sequential round trips through the system's result
  API; ``{"roundtrip": [s...], "dispatch": [s...]}`` (dispatch = enqueue -> task start)
- ``fanout {parents, children, timeout}`` -> ``{"t0", "last", "done", "errors",
  "children_done", "timed_out"}``

A request that fails answers ``{"error": "Type: message"}``; the loop goes on.
Timings use ``time.perf_counter`` within this process and ``time.time`` when
compared with the tasks' records.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
import uuid
from typing import Any

from bench.peers.common import child_tag, client, done_key, err_key

MARKER = "@@BENCH "
POLL = 0.005


def _tag(op: str) -> str:
    return f"{op}-{uuid.uuid4().hex[:12]}"


def _wait_count(key: str, n: int, deadline: float, also: str | None = None) -> bool:
    """Poll LLEN with a deadline (the measured times come from the records, not from here)."""
    redis = client()
    while True:
        count = int(redis.llen(key)) + (int(redis.llen(also)) if also else 0)
        if count >= n:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def _timestamps(key: str) -> list[float]:
    return [float(v) for v in client().lrange(key, 0, -1)]


def op_enqueue(adapter: Any, mode: str, n: int) -> dict[str, Any]:
    tag = _tag("enqueue")
    if mode == "batch" and adapter.batch_api is None:
        return {"unsupported": "no bulk enqueue API"}
    start = time.perf_counter()
    if mode == "batch":
        adapter.enqueue_batch(tag, n)
    elif mode == "single":
        adapter.enqueue_single(tag, n)
    else:
        raise ValueError(f"unknown enqueue mode {mode!r}")
    return {"seconds": time.perf_counter() - start}


def op_drain(adapter: Any, n: int, timeout: float, mode: str = "auto") -> dict[str, Any]:
    tag = _tag("drain")
    use_batch = adapter.batch_api is not None and mode != "single"
    t0 = time.time()
    if use_batch:
        adapter.enqueue_batch(tag, n)
    else:
        adapter.enqueue_single(tag, n)
    enqueued = time.time()
    _wait_count(done_key(tag), n, time.monotonic() + timeout)
    stamps = _timestamps(done_key(tag))
    return {
        "t0": t0,
        "enqueued": enqueued,
        "first": min(stamps) if stamps else None,
        "last": max(stamps) if stamps else None,
        "done": len(stamps),
        "batch": use_batch,
    }


def op_latency(adapter: Any, n: int, timeout: float) -> dict[str, Any]:
    tag = _tag("latency")
    roundtrips: list[float] = []
    starts: list[float] = []
    for i in range(n):
        starts.append(time.time())
        begin = time.perf_counter()
        value = adapter.roundtrip(tag, i, timeout)
        roundtrips.append(time.perf_counter() - begin)
        if value != i:
            raise RuntimeError(f"round trip {i} returned {value!r}")
    stamps = _timestamps(done_key(tag))
    dispatch = [stamp - start for stamp, start in zip(stamps, starts, strict=False)]
    return {"roundtrip": roundtrips, "dispatch": dispatch}


def op_fanout(adapter: Any, parents: int, children: int, timeout: float) -> dict[str, Any]:
    tag = _tag("fanout")
    t0 = time.time()
    adapter.start_fanout(tag, parents, children)
    finished = _wait_count(done_key(tag), parents, time.monotonic() + timeout, also=err_key(tag))
    stamps = _timestamps(done_key(tag))
    errors = [e.decode(errors="replace") for e in client().lrange(err_key(tag), 0, -1)]
    return {
        "t0": t0,
        "last": max(stamps) if stamps else None,
        "done": len(stamps),
        "errors": sorted(set(errors))[:3],
        "error_count": len(errors),
        "children_done": int(client().llen(done_key(child_tag(tag)))),
        "timed_out": not finished,
    }


def handle(adapter: Any, request: dict[str, Any]) -> dict[str, Any]:
    op = request.pop("op")
    if op == "ping":
        return {"batch_api": adapter.batch_api}
    if op == "enqueue":
        return op_enqueue(adapter, **request)
    if op == "drain":
        return op_drain(adapter, **request)
    if op == "latency":
        return op_latency(adapter, **request)
    if op == "fanout":
        return op_fanout(adapter, **request)
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.client <adapter module>", file=sys.stderr)
        return 2
    module = importlib.import_module(argv[0])
    adapter = module.Adapter()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(adapter, json.loads(line))
        except Exception as exc:  # noqa: BLE001 - reported to the harness, loop goes on
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        sys.stdout.write(MARKER + json.dumps(answer) + "\n")
        sys.stdout.flush()
    adapter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
