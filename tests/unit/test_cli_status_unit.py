"""Pieces of ``pynenc status`` that need no backend: schemas, docs, formatting, usage errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from pynenc.cli import render
from pynenc.cli.main import build_cli
from tests.cli_helpers import SCHEMA_PATH, schema_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
DOCUMENTS = ("status", "invocation", "tasks", "runners", "graph", "action", "purge")


def test_schema_file_is_a_valid_2020_12_schema() -> None:
    document = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    for name in DOCUMENTS:
        jsonschema.Draft202012Validator.check_schema(schema_for(name))


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_document_is_documented(name: str) -> None:
    assert f"`$defs/{name}`" in DOCS.read_text()


def test_schemas_are_closed_so_new_fields_are_noticed() -> None:
    schema = schema_for("action")
    document = {
        "invocation_id": "x",
        "action": "kill",
        "done": True,
        "status_before": "REGISTERED",
        "status_after": "KILLED",
        "reason": None,
    }
    jsonschema.Draft202012Validator(schema).validate(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**document, "surprise": 1})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**document, "status_after": "NOT_A_STATUS"})


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0.25, "250ms"), (12.34, "12.3s"), (245, "4m05s"), (7380, "2h03m"), (3 * 86400 + 4 * 3600, "3d04h")],
)
def test_durations(seconds: float | None, shown: str) -> None:
    assert render.duration(seconds) == shown


def test_status_needs_an_app() -> None:
    result = CliRunner().invoke(build_cli(), ["status"], env={"PYNENC_APP": ""})
    assert result.exit_code == 2
    assert "--app" in result.output


def test_commands_are_listed_in_help() -> None:
    result = CliRunner().invoke(build_cli(), ["--help"])
    for command in ("status", "invocation", "purge"):
        assert re.search(rf"^\s+{command}\s", result.output, re.MULTILINE), command
    sub = CliRunner().invoke(build_cli(), ["status", "--help"])
    for command in ("invocation", "tasks", "runners", "graph", "render"):
        assert re.search(rf"^\s+{command}\s", sub.output, re.MULTILINE), command


def test_watch_is_for_the_overview_only() -> None:
    result = CliRunner().invoke(build_cli(), ["--app", "tests.cli_app.app", "status", "--watch", "tasks"])
    assert result.exit_code == 2 and "--watch refreshes the overview only" in result.output
