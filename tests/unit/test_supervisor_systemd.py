"""The systemd units: ``systemd-analyze verify`` where available, and the directives the daemon relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pynenc.conf.config_pynenc import ConfigPynenc

UNITS = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED_PATH = "/opt/pynenc/venv/bin/pynenc-supervisor"


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def _script() -> str:
    script = Path(sys.executable).with_name("pynenc-supervisor")
    return str(script) if script.exists() else f"{sys.executable} -m pynenc.supervisors"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(
    ("source", "installed_as"),
    [
        ("pynenc-supervisor.service", "pynenc-supervisor.service"),
        ("pynenc-supervisor@.service", "pynenc-supervisor@billing.service"),
    ],
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path, source: str, installed_as: str) -> None:
    # verify checks that ExecStart's program exists: point it at this environment's script.
    text = (UNITS / source).read_text().replace(INSTALLED_PATH, _script())
    unit = tmp_path / installed_as
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = installed_as.split("@")[0]
    problems = [line for line in done.stderr.splitlines() if ours in line or "error" in line.lower()]
    assert done.returncode == 0 and not problems, done.stderr


@pytest.mark.parametrize("name", ["pynenc-supervisor.service", "pynenc-supervisor@.service"])
def test_units_declare_what_the_supervisor_expects(name: str) -> None:
    unit = _directives(name)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["KillMode"] == ["mixed"]
    assert unit["Restart"] == ["on-failure"]
    assert set(unit["RestartPreventExitStatus"][0].split()) == {"3", "4"}
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["User"] and unit["EnvironmentFile"] and unit["WatchdogSec"]
    assert "pynenc-supervisor --app" in unit["ExecStart"][0]
    # the stop budget must cover the warm shutdown's graceful timeout (the default and the unit's own)
    stop_budget = float(unit["TimeoutStopSec"][0])
    graceful = re.search(r"PYNENC_GRACEFUL_TIMEOUT=(\d+)", unit["Environment"][0])
    assert graceful is not None and stop_budget > float(graceful.group(1))
    assert stop_budget > ConfigPynenc.graceful_timeout.default


def test_env_example_options_exist() -> None:
    text = (UNITS / "pynenc.env.example").read_text()
    for match in re.finditer(r"^#?PYNENC__([A-Z_]+)=", text, re.MULTILINE):
        assert match.group(1).lower() in ConfigPynenc.settings(), match.group(0)
