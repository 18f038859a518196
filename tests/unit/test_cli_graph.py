"""``pynenc status graph``: text, dot, SVG and JSON all say exactly what the transition table says."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pynenc.status import FINAL, TRANSITIONS, InvocationStatus
from tests.cli_helpers import cli, validate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
TABLE = {(src.value, dst.value, rule) for src, dsts in TRANSITIONS.items() for dst, rule in dsts.items()}


def graph(*args: str) -> str:
    result = cli("status", "graph", *args, app_spec=None)  # needs no --app
    assert result.exit_code == 0, result.output
    return result.stdout


def test_text_is_the_transition_table() -> None:
    found = set()
    finals = set()
    source = ""
    for line in graph().splitlines()[2:]:
        if line and not line.startswith(" "):
            source = line.removesuffix(" *")
            if line.endswith(" *"):
                finals.add(source)
        elif line.strip().startswith("->"):
            _, target, rule = line.split()
            found.add((source, target, rule))
    assert found == TABLE
    assert finals == {status.value for status in FINAL}


def test_dot_has_every_status_and_transition() -> None:
    dot = graph("--format", "dot")
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    edges = set(re.findall(r'"(\w+)" -> "(\w+)" \[label="(\w+)"', dot))
    assert edges == TABLE
    nodes = set(re.findall(r'^    "(\w+)" \[label=', dot, re.MULTILINE))
    assert nodes == {status.value for status in InvocationStatus}


def test_json_validates_and_matches_the_table() -> None:
    data = json.loads(graph("--json"))
    validate("graph", data)
    assert {(t["from"], t["to"], t["by"]) for t in data["transitions"]} == TABLE
    assert set(data["final"]) == {status.value for status in FINAL}
    assert json.loads(cli("status", "--json", "graph", app_spec=None).stdout) == data


def test_render_is_an_alias_and_output_goes_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "states.dot"
    result = cli("status", "render", "--format", "dot", "-o", str(target), app_spec=None)
    assert result.exit_code == 0, result.output
    assert target.read_text() == graph("--format", "dot")


def test_docs_carry_the_generated_graph() -> None:
    text = DOCS.read_text()
    block = text.split("<!-- status-graph:begin -->\n```text\n", 1)[1].split("```\n<!-- status-graph:end -->", 1)[0]
    assert block == graph(), "docs/cli.md is out of date: paste the output of `pynenc status graph`"


def test_svg_without_graphviz_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `dot` to be found
    result = cli("status", "graph", "--format", "svg", app_spec=None)
    assert result.exit_code == 1
    assert "Graphviz 'dot' is not installed" in result.stderr and "--format dot" in result.stderr
    assert result.stdout == ""


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (the message is tested above)")
def test_svg_with_graphviz() -> None:
    svg = graph("--format", "svg")
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    for status in InvocationStatus:
        assert f">{status.value}</text>" in svg
