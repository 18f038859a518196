"""The wheel holds exactly the pynenc package (runners and supervisors inside it), scripts, Lua and py.typed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("pynenc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"pynenc", next(n for n in top_level if n.endswith(".dist-info"))}
    for expected in (
        "pynenc/py.typed",
        "pynenc/app.py",
        "pynenc/runners/thread_runner.py",
        "pynenc/supervisors/slot_table.py",
        "pynenc/cli/main.py",
        "pynenc/orchestrator/claim-12.lua",
        "pynenc/orchestrator/redis_prelude.lua",
    ):
        assert expected in names, expected
    assert not any(name.startswith(("tests/", "bench/", "runners/", "supervisors/")) for name in names)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pynenc = pynenc.cli.main:main" in scripts


def test_editable_install_maps_runners_and_supervisors() -> None:
    import pynenc.runners.thread_runner
    import pynenc.supervisors.slot_table

    assert Path(pynenc.runners.thread_runner.__file__).parent == ROOT / "runners"
    assert Path(pynenc.supervisors.slot_table.__file__).parent == ROOT / "supervisors"
