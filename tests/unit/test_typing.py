"""Type checkers see a task's real signature (ParamSpec) and result type."""

from __future__ import annotations

from pathlib import Path

from mypy import api

SAMPLE = """
from pynenc import Pynenc

app = Pynenc()

@app.task
def add(x: int, y: int) -> int:
    return x + y

@app.task(max_retries=2)
async def fetch(url: str) -> bytes:
    return b""

@app.direct_task
def double(x: int) -> int:
    return 2 * x

reveal_type(add(1, 2).result)
reveal_type(fetch("u").result)
reveal_type(double(3))
reveal_type(add.parallelize([(1, 2)]).results)
add("a", 2)
add(1)
"""


def test_task_signature_and_result_types(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    stdout, _, _ = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(sample)])
    lines = stdout.splitlines()
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed type is" in line]
    assert revealed == ['"int"', '"bytes"', '"int"', '"typing.Iterator[int]"']
    errors = [line for line in lines if ": error:" in line]
    assert any("sample.py:22:" in line and "incompatible type" in line for line in errors), errors
    assert any("sample.py:23:" in line and "Missing positional argument" in line for line in errors), errors
    assert len(errors) == 2, errors
