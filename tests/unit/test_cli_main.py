"""The ``pynenc`` command group: --app loading, show_config, runner start, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pynenc.cli.main import EXIT_APP_LOAD, EXIT_CONFIGURATION, build_cli

APP_MODULE = """
from pynenc import Pynenc
app = Pynenc(app_id="cli-unit")

@app.task
def add(x: int, y: int) -> int:
    return x + y
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "clitasks.py").write_text(APP_MODULE)
    (tmp_path / "broken.py").write_text("import nowhere_to_be_found\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("clitasks", "broken"):
        sys.modules.pop(name, None)
    return tmp_path


def test_show_config_lists_values_and_sources(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__MAX_STALLS", "9")
    result = CliRunner().invoke(build_cli(), ["--app", "clitasks.app", "show_config"])
    assert result.exit_code == 0, result.output
    assert "cli-unit" in result.output
    line = next(line for line in result.output.splitlines() if "max_stalls" in line)
    assert "9" in line and "env PYNENC__MAX_STALLS" in line


def test_show_config_json(project: Path) -> None:
    result = CliRunner().invoke(build_cli(), ["--app", "clitasks", "show_config", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["app_id"] == {"value": "cli-unit", "source": "code"}
    assert data["runner_cls"]["source"] == "default"


def test_password_is_never_printed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__REDIS_PASSWORD", "s3cret")
    result = CliRunner().invoke(build_cli(), ["--app", "clitasks.app", "show_config"])
    assert "s3cret" not in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing_module.app", "cannot import module missing_module"),
        ("broken.app", "No module named 'nowhere_to_be_found'"),
        ("clitasks.nothing", "clitasks.nothing is nothing, not a Pynenc app"),
        ("clitasks.add", "is Task, not a Pynenc app"),
    ],
)
def test_bad_app_exits_with_the_app_load_code(project: Path, spec: str, message: str) -> None:
    result = CliRunner().invoke(build_cli(), ["--app", spec, "show_config"])
    assert result.exit_code == EXIT_APP_LOAD
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_setting_exits_with_the_configuration_code(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__RUNNER_CLS", "NoSuchRunner")
    result = CliRunner().invoke(build_cli(), ["--app", "clitasks.app", "show_config"])
    assert result.exit_code == EXIT_CONFIGURATION
    assert "NoSuchRunner" in result.output and "ThreadRunner" in result.output


def test_runner_start_with_dummy_runner_says_what_to_configure(project: Path) -> None:
    result = CliRunner().invoke(build_cli(), ["--app", "clitasks.app", "runner", "start"])
    assert result.exit_code == 1
    assert "runner_cls" in result.output


def test_runner_start_serves_until_sigterm(project: Path) -> None:
    env = {**os.environ, "PYNENC__RUNNER_CLS": "ThreadRunner", "PYTHONPATH": str(project)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pynenc.cli", "--app", "clitasks.app", "runner", "start"],
        cwd=project,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    line = ""
    while "serving" not in line:
        line = process.stderr.readline()
        assert line or process.poll() is None, "runner exited before serving"
        assert time.monotonic() < deadline
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
