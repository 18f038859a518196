"""The app the CLI tests point ``--app tests.cli_app.app`` at.

Tests configure its backend (tests/integration/backends.py) and create
invocations in process; the CLI, loading the same module, sees the same app.
"""

from __future__ import annotations

from pynenc import Pynenc
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.exceptions import RetryError

app = Pynenc(app_id="cli-tests")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(max_retries=2, retry_for=(RetryError,), running_concurrency=ConcurrencyControlType.TASK)
def flaky(payload: str) -> str:
    return payload
