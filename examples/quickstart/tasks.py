"""Tasks of the quick-start example: plain module-level functions decorated with @app.task."""

from __future__ import annotations

from pynenc import Pynenc

app = Pynenc(app_id="quickstart")


@app.task
def add(x: int, y: int) -> int:
    add.logger.info(f"adding {x} and {y}")
    return x + y


@app.task
def fibonacci(n: int) -> int:
    """Waits on its own sub-invocations: each wait gives its slot to other work."""
    if n <= 1:
        return n
    return fibonacci(n - 1).result + fibonacci(n - 2).result


@app.task
def ping(n: int) -> int:
    """Waits on pong(n), which waits on ping(n): a cycle, reported instead of hanging."""
    return pong(n).result


@app.task
def pong(n: int) -> int:
    return ping(n).result
