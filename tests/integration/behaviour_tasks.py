"""Tasks of the behavioural suite (module level, as users write them)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pynenc import ConcurrencyControlType, Pynenc, RetryError

app = Pynenc(app_id="behaviour")

#: (task name, argument, event, timestamp) recorded by tasks that the tests inspect
events: list[tuple[str, Any, str, float]] = []
events_lock = threading.Lock()


def record(name: str, arg: Any, event: str) -> None:
    with events_lock:
        events.append((name, arg, event, time.time()))


@app.task
def add(x: int, y: int) -> int:
    add.logger.info("adding %s and %s", x, y)
    return x + y


@app.task
def every_kind(a: int, /, b: int, *rest: int, c: int = 3, **extra: int) -> list[Any]:
    """Parameters of every kind: a run must rebuild the call exactly."""
    return [a, b, list(rest), c, sorted(extra.items())]


@app.task
def keyword_only(a: int, *, b: int = 2) -> list[int]:
    return [a, b]


@app.task
def echo(value: Any) -> Any:
    return value


@app.task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def current_invocation_id() -> str:
    invocation = current_invocation_id.invocation
    assert invocation is not None
    return invocation.invocation_id


@app.task
def fibonacci(n: int) -> int:
    if n <= 1:
        return n
    first = fibonacci(n - 1)
    second = fibonacci(n - 2)
    return first.result + second.result


@app.task
def child(i: int) -> int:
    return i * 10


@app.task
def parent(i: int) -> int:
    children = [child(i * 3 + k) for k in range(3)]
    return sum(c.result for c in children)


@app.task
def parent_group(n: int) -> list[int]:
    return sorted(child.parallelize([(i,) for i in range(n)]).results)


@app.task
def ping_a(n: int) -> int:
    return ping_b(n).result


@app.task
def ping_b(n: int) -> int:
    return ping_a(n).result


@app.task
def recurse_same(n: int) -> int:
    return recurse_same(n).result


@app.task
def catch_cycle(n: int) -> str:
    try:
        recurse_same(n).result
    except Exception as exc:
        return type(exc).__name__
    return "no error"


@app.task
def slow(name: str, seconds: float) -> str:
    record("slow", name, "start")
    time.sleep(seconds)
    record("slow", name, "end")
    return name


@app.task
def gather_slow(specs: list[tuple[str, float]]) -> list[str]:
    return list(slow.parallelize([(name, seconds) for name, seconds in specs]).results)


@app.task(running_concurrency=ConcurrencyControlType.TASK)
def exclusive(i: int, seconds: float) -> int:
    record("exclusive", i, "start")
    time.sleep(seconds)
    record("exclusive", i, "end")
    return i


@app.task(running_concurrency=ConcurrencyControlType.KEYS, key_arguments=("key",))
def keyed(key: str, i: int, seconds: float) -> int:
    record("keyed", (key, i), "start")
    time.sleep(seconds)
    record("keyed", (key, i), "end")
    return i


@app.task(running_concurrency=ConcurrencyControlType.TASK, reroute_on_concurrency_control=False)
def exclusive_no_reroute(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@app.task(registration_concurrency=ConcurrencyControlType.ARGUMENTS)
def register_once(x: int) -> int:
    return x


@app.task(registration_concurrency=ConcurrencyControlType.TASK)
def register_once_per_task(x: int) -> int:
    return x


@app.task(
    registration_concurrency=ConcurrencyControlType.KEYS,
    key_arguments=("key",),
    on_diff_non_key_args_raise=True,
)
def register_by_key(key: str, other: int) -> int:
    return other


@app.task(max_retries=2)
def always_retry() -> None:
    raise RetryError("try again")


_attempts: dict[str, int] = {}


@app.task(retry_for=(ConnectionError,), max_retries=3)
def flaky(token: str, failures: int) -> int:
    _attempts[token] = _attempts.get(token, 0) + 1
    if _attempts[token] <= failures:
        raise ConnectionError(f"attempt {_attempts[token]} failed")
    return _attempts[token]


@app.task
def gate(name: str) -> str:
    """Blocks until the test opens the gate (used to hold a runner slot)."""
    record("gate", name, "start")
    assert gates[name].wait(30), f"gate {name} never opened"
    return name


gates: dict[str, threading.Event] = {}


@app.task
def waiter_on(invocation_id: str) -> int:
    """Waits on an existing invocation by id (builds the wait edge for priority tests)."""
    from pynenc.invocation import Invocation

    value: int = Invocation(app, echo, invocation_id, {}).result
    return value


@app.task
def returns_generator() -> Any:
    return (i for i in range(3))


def split(arguments: dict[str, Any]) -> list[tuple[int]]:
    return [(x,) for x in arguments["numbers"]]


def combine(results: list[int]) -> int:
    return sum(results)


@app.direct_task
def direct_add(x: int, y: int) -> int:
    return x + y


@app.direct_task(parallel_func=lambda args: [(n,) for n in args["numbers"]], aggregate_func=sum)
def square_all(numbers: Any) -> int:
    value: int = numbers * numbers
    return value


#: name -> invocation id, handed to running tasks by the tests
named: dict[str, str] = {}


@app.task
def waits_for_named(name: str) -> Any:
    """Holds its slot until the test opens gate "go", then waits on the invocation named ``name``."""
    record("waits_for_named", name, "start")
    assert gates["go"].wait(30), "gate go never opened"
    from pynenc.invocation import Invocation

    return Invocation(app, slow, named[name], {}).result


@contextmanager
def prepared_app(app_id_prefix: str, configure_backend: Callable[[Pynenc], None]) -> Iterator[Pynenc]:
    """This module's app with a fresh app id, a backend, a 2-thread ThreadRunner setting, clean records."""
    app.conf.dev_mode_force_sync_tasks = False
    app.conf.cycle_control = True
    app.conf.app_id = f"{app_id_prefix}-{uuid.uuid4().hex[:10]}"
    configure_backend(app)
    app.conf.runner_cls = "ThreadRunner"
    app.conf.max_threads = 2
    app.conf.logging_level = "WARNING"
    events.clear()
    gates.clear()
    named.clear()
    yield app
    for gate in gates.values():
        gate.set()
    app.purge()
    app.reset_components()
