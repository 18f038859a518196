"""README's main-job command works on a fresh copy of the project in a new virtualenv.

(The test command is the one running this very test; `.ci/run` runs both on a clean checkout.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.unit.test_docs import readme_commands
from tests.unit.test_packaging import clean_copy


def test_main_job_command_on_a_fresh_copy(tmp_path: Path) -> None:
    project = clean_copy(tmp_path / "pynenc")
    main_job = readme_commands()[0]
    result = subprocess.run(["sh", "-c", main_job], cwd=project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "add(1, 2) = 3" in result.stdout
    assert "cycle detected, as expected" in result.stdout
    assert "quickstart finished" in result.stdout
