"""A small app for unit tests that need tasks defined at module level."""

from __future__ import annotations

from pynenc import Pynenc

app = Pynenc(app_id="unit")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(max_retries=2)
def flaky(x: int) -> int:
    return x
