"""Pieces of ``pynenc status`` that need no backend: schemas, docs, formatting, usage errors."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from pynenc import Pynenc
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


DEFAULT_BACKEND_APP = """
from pynenc import Pynenc
app = Pynenc(app_id="{app_id}")

@app.task
def add(x: int, y: int) -> int:
    return x + y
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with opsdefault.py (no backend configured), as an operator's working copy."""
    (tmp_path / "opsdefault.py").write_text(DEFAULT_BACKEND_APP.format(app_id="ops-default"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in list(os.environ):
        if name.startswith("PYNENC"):
            monkeypatch.delenv(name)
    sys.modules.pop("opsdefault", None)
    yield tmp_path
    module = sys.modules.pop("opsdefault", None)
    if module is not None:
        module.app.close()


def test_app_on_the_default_backend_is_read_from_the_supervisors_sqlite_file(project: Path) -> None:
    # What pynenc-supervisor does with the same app from this directory: write to <app_id>.db.
    writer = Pynenc(app_id="ops-default")
    writer.use_shared_backend_default()
    assert writer.conf.sqlite_db_path and Path(writer.conf.sqlite_db_path).parent == project
    tasks = importlib.import_module("opsdefault")  # the app the CLI loads: still on the default
    spec = tasks.add.make_call({"x": 1, "y": 2})
    writer.orchestrator.register([spec])
    writer.close()

    result = CliRunner().invoke(build_cli(), ["--app", "opsdefault.app", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert "no backend configured for app ops-default; reading PYNENC__SQLITE_DB_PATH=" in result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "sqlite" and data["status_counts"]["REGISTERED"] == 1


def test_memory_backend_on_purpose_is_flagged(project: Path) -> None:
    (project / "opsmem.py").write_text(
        DEFAULT_BACKEND_APP.format(app_id="ops-mem") + "\napp.conf.orchestrator_cls = 'MemOrchestrator'\n"
    )
    sys.modules.pop("opsmem", None)
    result = CliRunner().invoke(build_cli(), ["--app", "opsmem.app", "status", "tasks"])
    assert result.exit_code == 0, result.output
    assert "uses the memory backend: only this process's invocations are visible" in result.stderr
    sys.modules.pop("opsmem", None)
