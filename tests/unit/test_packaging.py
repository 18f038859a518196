"""The wheel holds exactly the pynenc package (runners and supervisors inside it), scripts, Lua and py.typed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_copy(target: Path) -> Path:
    """The tracked and untracked-but-not-ignored files only: no stale build/ of an earlier build."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def test_wheel_contents(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(source)],
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
        "pynenc/orchestrator/redis_prelude.lua",
    ):
        assert expected in names, expected
    scripts = {f"pynenc/orchestrator/{p.name}" for p in (ROOT / "pynenc" / "orchestrator").glob("*.lua")}
    assert scripts and scripts == {name for name in names if name.endswith(".lua")}
    assert not any(name.startswith(("tests/", "bench/", "runners/", "supervisors/")) for name in names)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pynenc = pynenc.cli.main:main" in scripts


def test_editable_install_maps_runners_and_supervisors() -> None:
    import pynenc.runners.thread_runner
    import pynenc.supervisors.slot_table

    assert Path(pynenc.runners.thread_runner.__file__).parent == ROOT / "runners"
    assert Path(pynenc.supervisors.slot_table.__file__).parent == ROOT / "supervisors"
