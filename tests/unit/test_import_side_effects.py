"""Importing pynenc configures nothing global: no logging handlers, no structlog setup."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import logging, structlog
before_root = list(logging.getLogger().handlers)
before_structlog = structlog.is_configured()
import pynenc
from pynenc import Pynenc
app = Pynenc(app_id="quiet")

@app.task
def add(x: int, y: int) -> int:
    return x + y

assert logging.getLogger().handlers == before_root, logging.getLogger().handlers
assert structlog.is_configured() == before_structlog
assert logging.getLogger().level == logging.WARNING
print("clean")
"""


def test_import_and_app_creation_touch_no_global_logging() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"
