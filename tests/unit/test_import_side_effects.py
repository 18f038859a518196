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


RUNNER_IMPORTS = """
import sys
import pynenc.supervisors.cli, pynenc.supervisors.worker
from pynenc import PynencBuilder
app = PynencBuilder().app_id("lean").memory().build()
app.logger.info("booted")
try:
    raise ValueError("boom")
except ValueError:
    app.logger.error("failed", exc_info=True)
assert "rich" not in sys.modules and "pygments" not in sys.modules, "rich loaded by the daemon's imports"
import rich.console  # still importable for `pynenc status` and for the user's code
print("lean")
"""


def test_the_supervisor_and_runner_imports_leave_rich_out() -> None:
    # structlog would import rich (about 5 MiB) into the supervisor and every runner process
    # only to draw tracebacks; the tracebacks stay readable without it.
    result = subprocess.run([sys.executable, "-c", RUNNER_IMPORTS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lean"
    assert "ValueError: boom" in result.stdout + result.stderr
