"""``python -m bench setup``: one virtualenv per peer under ``bench/.venvs/``.

A venv is (re)built when it is missing or when its recorded requirements differ
from the pins in ``bench.registry``; otherwise it is left alone, so setup is
cheap to call before every run. ``pip freeze`` of each venv is kept beside it
and copied into the results, so a run says exactly what it measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.registry import VENVS_DIR, BenchError, SystemSpec

MARKER = "bench-requirements.json"
FREEZE = "bench-freeze.txt"


def _marker(spec: SystemSpec) -> Path:
    return spec.venv_dir() / MARKER


def is_ready(spec: SystemSpec) -> bool:
    """True when the venv exists and was built from the current pins."""
    if not spec.is_peer:
        return True
    marker = _marker(spec)
    if not marker.is_file() or not spec.python().exists():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == list(spec.requirements))


def freeze(spec: SystemSpec) -> list[str]:
    """Installed distributions of a system's environment (``name==version``)."""
    if not spec.is_peer:
        from importlib.metadata import version

        return [f"pynenc=={version('pynenc')}", f"redis=={version('redis')}"]
    path = spec.venv_dir() / FREEZE
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


def ensure(spec: SystemSpec, *, log: bool = True) -> None:
    """Create (or rebuild) the venv of one peer; no-op for pynenc or an up-to-date venv."""
    if is_ready(spec):
        return
    venv = spec.venv_dir()
    if venv.exists():
        shutil.rmtree(venv)
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    if log:
        print(f"[setup] creating {venv} with {' '.join(spec.requirements)}", flush=True)
    _run([sys.executable, "-m", "venv", str(venv)], f"create venv for {spec.name}")
    _run(
        [str(spec.python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *spec.requirements],
        f"install {spec.name}",
    )
    frozen = subprocess.run(
        [str(spec.python()), "-m", "pip", "freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (venv / FREEZE).write_text(frozen)
    # Written last: a venv whose install failed half-way is never marked ready.
    _marker(spec).write_text(json.dumps(list(spec.requirements)))


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise BenchError(f"could not {what} (exit {result.returncode}):\n{tail}")


def ensure_all(specs: list[SystemSpec]) -> None:
    for spec in specs:
        ensure(spec)
