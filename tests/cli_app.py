"""The app the CLI tests point ``--app tests.cli_app.app`` at.

Tests configure its backend (tests/integration/backends.py) and create
invocations in process; the CLI, loading the same module, sees the same app.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pynenc import Pynenc
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.exceptions import RetryError

# Subprocess tests name the app id through the environment so they can share a backend with the test.
app = Pynenc(app_id=os.environ.get("PYNENC_CLI_TEST_APP_ID", "cli-tests"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(max_retries=2, retry_for=(RetryError,), running_concurrency=ConcurrencyControlType.TASK)
def flaky(payload: str) -> str:
    return payload


@app.task
def slow(marker: str, seconds: float) -> int:
    """Write this runner's pid to ``marker`` (the test's signal that it started), then sleep."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()
