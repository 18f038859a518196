"""Docs that are generated or quoted must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from pynenc.conf.reference import render_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_markdown(), (
        "docs/configuration.md is out of date: run `python -m pynenc.conf.reference > docs/configuration.md`"
    )


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(?:sh|bash)\n(.+?)\n```", section, flags=re.M | re.S)


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_them() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert "\n" not in command
        assert command in ci, f".ci/run does not run README's command: {command}"
    assert "pytest -n auto" in commands[1]


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"
